"""Batched matmul of small matrices: one BLAS GEMM per product, the batch split over cores.

Attention's products (Q·Kᵀ, weights·V and their gradients: 64 products of 128×32 by 32×128
in GPT config M) are small GEMMs on strided views: Q, K and V are heads sliced out of one
[B, T, 3·D] projection, so a head's [T, d] matrix has rows 3·D apart, and the batch axes
(B, H) cannot be merged without a copy. NumPy's matmul runs them one after another (each on
one core: its BLAS gains nothing from threads at this size), 0.6-0.9 ms a call here.
This kernel hands each product to the BLAS as it lies (a leading dimension and a transpose
flag per operand, no copy) from a Numba loop that releases the GIL, and splits the batch
over tgraph's kernel threads: 0.4-0.5 ms.

The GEMM is SciPy's (``scipy.linalg.cython_blas``: its own OpenBLAS, not NumPy's), called
through its C address. That OpenBLAS is put on one thread while a batch runs, since two
callers each waking its threads would fight over two cores (Q·Kᵀ: 1.0 ms so, 0.5 ms on one
thread each); it is restored after. The setting is the process's: a SciPy BLAS call that
another thread of the user's makes meanwhile runs on one thread, with the same result.
"""

from __future__ import annotations

import ctypes
import functools
import math

import numpy as np
from numba import njit, types

from tgraph.parallel import split

#: M·N·K of one product up to which the batch is split here; above it one product is big
#: enough for the BLAS's own threads (NumPy's matmul)
SMALL_GEMM = 1 << 22


# Numba's own wrapper of SciPy's ?gemm (what its np.dot calls): a symbol of Numba's helper
# library, so ``products`` caches on disk like any other kernel. Its pointer arguments are
# declared as addresses (intp): the same registers on every ABI here.
_WORD = types.intp
_GEMM = types.ExternalFunction("numba_xxgemm", types.intc(
    types.char, types.char, types.char, *[_WORD] * 11))


@njit(nogil=True, cache=True)
def products(lo, hi, kind, a, a_off, b, b_off, c, m, n, k, flags, lds, one_zero):
    """Row-major c[i] (m×n, contiguous) = A_i @ B_i for i in lo..hi, as the column-major GEMM
    c[i]ᵀ = B_iᵀ·A_iᵀ; flags and lds: B's then A's transpose letter and leading dimension;
    a_off/b_off: each product's byte offsets into a and b; one_zero: [1, 0] in the dtype
    (alpha and beta)."""
    itemsize = one_zero.itemsize
    one, zero = one_zero.ctypes.data, one_zero.ctypes.data + itemsize
    size = m * n * itemsize
    for i in range(lo, hi):
        _GEMM(kind, flags[0], flags[1], n, m, k, one, b + b_off[i], lds[0], a + a_off[i],
              lds[1], zero, c + i * size, n)


@functools.cache
def _scipy_blas_threads():
    """set(n) -> None and get() -> int of SciPy's OpenBLAS, or None if not found."""
    try:
        import scipy.linalg.cython_blas  # noqa: F401  (loads SciPy's BLAS)

        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f
                            if "scipy_openblas" in line and "scipy.libs" in line})
    except (OSError, ImportError):
        return None
    for path in paths:
        lib = ctypes.CDLL(path)
        try:
            set_threads, get_threads = (lib.scipy_openblas_set_num_threads,
                                        lib.scipy_openblas_get_num_threads)
        except AttributeError:
            continue
        set_threads.argtypes, get_threads.restype = [ctypes.c_int], ctypes.c_int
        return set_threads, get_threads
    return None


def _operand(x: np.ndarray) -> tuple[int, int] | None:
    """(transpose letter, leading dimension) of a matrix as the column-major GEMM reads its
    transpose, or None when neither of its axes is contiguous."""
    rows, cols = x.shape[-2:]
    row_step, col_step = (s // x.itemsize for s in x.strides[-2:])
    if col_step == 1 and row_step >= cols:
        return ord("N"), row_step
    if row_step == 1 and col_step >= rows:
        return ord("T"), col_step
    return None


def batched_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray | None:
    """a @ b for stacks of small matrices, or None where this path does not apply (the
    caller then runs NumPy's matmul)."""
    if (a.ndim < 3 or b.ndim < 3 or a.dtype != b.dtype or a.dtype not in (np.float32, np.float64)
            or min(*a.shape[-2:], b.shape[-1]) < 2
            or a.shape[-2] * a.shape[-1] * b.shape[-1] > SMALL_GEMM):
        return None
    lead = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    count = math.prod(lead)
    if count < 2:
        return None
    a, b = np.broadcast_to(a, lead + a.shape[-2:]), np.broadcast_to(b, lead + b.shape[-2:])
    read_a, read_b = _operand(a), _operand(b)
    threads = _scipy_blas_threads()
    if read_a is None or read_b is None or threads is None:
        return None
    m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
    out = np.empty(lead + (m, n), a.dtype)
    flags = np.array([read_b[0], read_a[0]], np.int8)
    lds = np.array([read_b[1], read_a[1]], np.int64)
    index = np.indices(lead).reshape(len(lead), -1)
    a_off = (np.array(a.strides[:-2])[:, None] * index).sum(0)
    b_off = (np.array(b.strides[:-2])[:, None] * index).sum(0)
    kind = np.int8(ord("d" if a.dtype == np.float64 else "s"))
    one_zero = np.array([1, 0], a.dtype)
    set_threads, get_threads = threads
    before = get_threads()
    set_threads(1)
    try:
        split(lambda lo, hi: products(lo, hi, kind, a.ctypes.data, a_off, b.ctypes.data,
                                      b_off, out.ctypes.data, m, n, k, flags, lds, one_zero),
              count, out.size)
    finally:
        set_threads(before)
    return out
