"""The CPU backend: the registry's kernels run with xp = numpy, a few replaced by faster
ones (numpy_kernels.py), and fused nodes by compiled loops (tgraph/codegen)."""

from __future__ import annotations

import ctypes
import functools
import platform

import numpy as np

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
_MMAP_THRESHOLD_MAX = 32 << 20  # glibc's ceiling on 64-bit


class NumpyBackend:
    name = "numpy"
    xp = np

    def __init__(self):
        from tgraph.backends.numpy_kernels import KERNELS

        self.kernels = KERNELS
        reuse_freed_memory()

    def asarray(self, a, dtype=None):
        return np.asarray(a, dtype=dtype)

    def to_numpy(self, a):
        return np.asarray(a)

    def synchronize(self) -> None:
        pass

    def prepare(self, node):
        """A compiled kernel for a node a code generator handles (a fused chain), else None.
        Compiled loops are built here, not on the first run."""
        if node.op == "fused":
            from tgraph.codegen import FusedKernel

            kernel = FusedKernel(node)
            kernel.preload()
            return kernel
        if node.op in self.kernels:  # compiled (or loaded) now, on tiny arrays: 2 per axis,
            # as a batched matmul needs to take its own path
            tiny = [np.zeros((2,) * v.type.rank, v.dtype) for v in node.inputs]
            try:
                self.kernels[node.op](np, *tiny, **node.attrs)
            except (ValueError, IndexError, TypeError, ArithmeticError):
                pass  # attrs that need real shapes: compiled on the first run instead
        return None

    def compile_ahead(self, nodes) -> None:
        """Cold kernels of a graph compiled on two cores (tgraph/codegen/ahead.py)."""
        from tgraph.codegen.ahead import compile_ahead

        compile_ahead(self, nodes)

    def writes_into(self, node):
        """How the node's kernel writes its result into a given array (``memplan.Into``):
        an input that dies at this step, or a buffer the memory plan chose; else None."""
        from tgraph.memplan import Into

        if node.op in _UFUNCS:
            ufunc = _UFUNCS[node.op]
            return Into(lambda out, a, b: ufunc(a, b, out=out), in_place=True)
        if node.op == "fused":
            from tgraph.codegen import FusedKernel

            kernel = FusedKernel(node)
            return Into(lambda out, *arrays: kernel(*arrays, into=out), in_place=True)
        if node.op == "scatter_add" and len(node.inputs) == 3:  # rows added onto the base
            shape = node.attrs["shape"]
            return Into(lambda out, upd, idx, base: self.kernels["scatter_add"](
                np, upd, idx, base, shape=shape, into=out if out is base else None),
                in_place=True, fresh=False)
        if node.op in _OUT_KERNELS:
            kernel, attrs = self.kernels[node.op], node.attrs
            return Into(lambda out, *arrays: kernel(np, *arrays, out=out, **attrs))
        return None


#: element-wise ops whose result can overwrite an input (NumPy ufuncs read each element
#: before writing it)
_UFUNCS = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.true_divide}
#: kernels (numpy_kernels.py) that take the planned buffer as ``out`` (not attention: it lays
#: its heads out by row, tgraph/codegen/attention.py, which a planned buffer is not)
_OUT_KERNELS = ("matmul", "softmax", "softmax_grad", "masked_softmax", "layernorm")


@functools.cache
def reuse_freed_memory() -> None:
    """Every kernel returns a fresh array; glibc serves big ones (MiBs) with mmap and unmaps
    them at free, so each step faults in zero-filled pages again (~19K page faults, ~7 % of
    a GPT-M training step). Serving them from the heap, and not trimming it, reuses the
    memory instead; peak memory is unchanged. Once per process; a no-op off glibc."""
    if platform.libc_ver()[0] != "glibc":
        return
    libc = ctypes.CDLL(None)  # the C library this process already runs on
    libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)
    libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
