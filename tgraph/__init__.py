"""tgraph: Transformers as explicit computation graphs you can render, run, differentiate
and compile.

    import tgraph as tg
    from tgraph import builder as tb
"""

import os

# OpenBLAS's threads spin for 2**28 cycles (~0.1 s) after each GEMM; in between, tgraph's
# fused kernels want those cores (a GELU gradient ran at half speed beside them). 2**14
# cycles (~5 µs) still carries them across the many small GEMMs of a batched matmul: GPT
# config M's -O2 step took 242 ms at 28, 215 at 4, 209 at 14. Unless the user chose a
# value; it takes effect only if NumPy is not imported yet.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "14")

from tgraph import ops  # noqa: F401  (registers the built-in ops)
from tgraph.errors import TGraphError
from tgraph.execute import Executable, run
from tgraph.io import load_graph, load_weights, save_graph, save_weights
from tgraph.ir import Graph, Node, Value
from tgraph.params import init_params, pack_params
from tgraph.types import TensorType

__version__ = "0.1.0"

__all__ = ["Executable", "Graph", "Node", "TensorType", "TGraphError", "Value", "init_params",
           "load_graph", "load_weights", "pack_params", "run", "save_graph", "save_weights"]
