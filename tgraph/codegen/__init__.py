"""Code generation: a fused node's subgraph compiled into one kernel (NumPy backend: a
Numba loop, numba_cpu.py), cached on disk by the subgraph's canonical form."""

from tgraph.codegen.numba_cpu import FusedKernel, cache_dir, canonical, source

__all__ = ["FusedKernel", "cache_dir", "canonical", "source"]
