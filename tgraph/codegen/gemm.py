"""Matmul on tgraph's kernel threads: one BLAS GEMM per product, the work split over cores.

Every float matmul of the NumPy backend comes here. Two cases:

- One GEMM (a weight shared by the batch: ``x[B, T, D] @ w[D, F]``, the leading axes merged
  into rows): the output's rows (or columns, the longer side) are split over the cores,
  each part one single-threaded GEMM on its slice.
- A batch of products (attention's Q·Kᵀ, weights·V and their gradients: 64 products of
  128×32 by 32×128 in GPT config M): each product handed to the BLAS as it lies in memory,
  Q, K and V being heads sliced out of one [B, T, 3·D] projection (a leading dimension and
  a transpose flag per operand, no copy), the batch split over the cores. NumPy's matmul
  runs them one after another, 0.6-0.9 ms a call here; this 0.4-0.5 ms.

Why not NumPy's matmul and its BLAS's threads: OpenBLAS's workers spin for
2**OPENBLAS_THREAD_TIMEOUT cycles after each GEMM (2**28, 0.1 s, unless the variable was
set before NumPy loaded), so one of two cores stayed busy through every fused kernel that
followed, and each of those ran at half speed (GPT config M forward: 67 ms so, 57 ms with
the spin cut short). Here one pool of threads does all the work.

The GEMM is the BLAS that ``blas.py`` binds (MKL when installed, else NumPy's OpenBLAS), on
one thread, called by address from loops that release the GIL. Each output element is the
BLAS's dot product over K whatever the split, so the result does not depend on the number
of cores.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, types

from tgraph.codegen.blas import bind, one_thread
from tgraph.parallel import cores, split

#: multiply-adds below which a GEMM runs on the calling thread only (waking a thread costs
#: more than half of it)
SPLIT_MIN = 1 << 21
#: rows or columns per unit of a split GEMM: a multiple of the BLAS's register tile
_BLOCK = 16

# ?gemm with the Fortran convention (every argument by address), by the symbol names blas.py
# binds, so these loops cache on disk like any other kernel
_WORD = types.intp
_SGEMM = types.ExternalFunction("tgraph_sgemm", types.void(*[_WORD] * 13))
_DGEMM = types.ExternalFunction("tgraph_dgemm", types.void(*[_WORD] * 13))
bind()  # the symbols bound before any loop below (or attention's) is compiled or loaded


@njit(nogil=True, cache=True)
def blas_gemm(kind, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, scratch):
    """Column-major c (m×n) = op(a)·op(b): kind ord('s') or ord('d'), trans letters as codes,
    a, b, c, alpha, beta as addresses; scratch: an int64[8] the call's integers go through
    (the BLAS is ILP64, blas.py)."""
    scratch[0], scratch[1], scratch[2], scratch[3] = transa, transb, m, n
    scratch[4], scratch[5], scratch[6], scratch[7] = k, lda, ldb, ldc
    at = scratch.ctypes.data
    if kind == 115:
        _SGEMM(at, at + 8, at + 16, at + 24, at + 32, alpha, a, at + 40, b, at + 48, beta, c,
               at + 56)
    else:
        _DGEMM(at, at + 8, at + 16, at + 24, at + 32, alpha, a, at + 40, b, at + 48, beta, c,
               at + 56)


@njit(nogil=True, cache=True)
def products(lo, hi, kind, a, a_off, b, b_off, c, m, n, k, flags, lds, one_zero):
    """Row-major c[i] (m×n, contiguous) = A_i @ B_i for i in lo..hi, as the column-major GEMM
    c[i]ᵀ = B_iᵀ·A_iᵀ; flags and lds: B's then A's transpose letter and leading dimension;
    a_off/b_off: each product's byte offsets into a and b; one_zero: [1, 0] in the dtype
    (alpha and beta)."""
    itemsize = one_zero.itemsize
    one, zero = one_zero.ctypes.data, one_zero.ctypes.data + itemsize
    size = m * n * itemsize
    scratch = np.empty(8, np.int64)
    for i in range(lo, hi):
        blas_gemm(kind, flags[0], flags[1], n, m, k, one, b + b_off[i], lds[0], a + a_off[i],
                  lds[1], zero, c + i * size, n, scratch)


@njit(nogil=True, cache=True)
def block(lo, hi, by_rows, kind, a, b, c, m, n, k, flags, lds, steps, one_zero):
    """Rows lo..hi of row-major c (m×n) = A @ B, or its columns lo..hi (by_rows False);
    steps: the bytes from one row of A, and from one column of B, to the next."""
    itemsize = one_zero.itemsize
    one, zero = one_zero.ctypes.data, one_zero.ctypes.data + itemsize
    scratch = np.empty(8, np.int64)
    if by_rows:
        blas_gemm(kind, flags[0], flags[1], n, hi - lo, k, one, b, lds[0], a + lo * steps[0],
                  lds[1], zero, c + lo * n * itemsize, n, scratch)
    else:
        blas_gemm(kind, flags[0], flags[1], hi - lo, m, k, one, b + lo * steps[1], lds[0], a,
                  lds[1], zero, c + lo * itemsize, n, scratch)


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


def _as_rows(a: np.ndarray) -> np.ndarray | None:
    """a[..., M, K] as one [rows, K] matrix without a copy, or None."""
    if a.ndim == 2:
        return a
    try:
        return np.reshape(a, (-1, a.shape[-1]), copy=False)
    except ValueError:
        return None


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray | None:
    """a @ b (into ``out``, C-contiguous, when given), or None where this path does not
    apply (the caller then runs NumPy's)."""
    if (a.ndim < 2 or b.ndim < 2 or a.dtype != b.dtype or a.dtype not in (np.float32, np.float64)
            or min(*a.shape[-2:], b.shape[-1]) < 2):
        return None
    if bind() is None:
        return None
    lead = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a_rows = _as_rows(a) if math.prod(b.shape[:-2]) == 1 else None
    with one_thread():
        if a_rows is not None:
            if out is None:  # owns its memory: the executor may write a later result into it
                out = np.empty(lead + (a.shape[-2], b.shape[-1]), a.dtype)
            ok = _one(a_rows, b.reshape(b.shape[-2:]), out.reshape(a_rows.shape[0], -1))
            return out if ok else None
        return _batch(a, b, lead, out)


def batch_offsets(lead: tuple, *arrays: np.ndarray) -> np.ndarray:
    """[len(arrays), prod(lead)]: the byte offset of each matrix of the batch ``lead`` in
    each array (its strides over the leading axes; 0 along a broadcast one)."""
    index = np.indices(lead).reshape(len(lead), math.prod(lead))
    return np.array([(np.array(x.strides[:len(lead)], np.int64)[:, None] * index).sum(0)
                     for x in arrays], np.int64).reshape(len(arrays), -1)


def _kind_and_scalars(x: np.ndarray):
    return np.int8(ord("d" if x.dtype == np.float64 else "s")), np.array([1, 0], x.dtype)


def _one(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> bool:
    """out (contiguous) = a @ b, split over the cores; False when an operand has no
    contiguous axis."""
    read_a, read_b = _operand(a), _operand(b)
    if read_a is None or read_b is None:
        return False
    (m, k), n = a.shape, b.shape[1]
    flags = np.array([read_b[0], read_a[0]], np.int8)
    lds = np.array([read_b[1], read_a[1]], np.int64)
    row_a = read_a[1] if read_a[0] == ord("N") else 1  # elements from one row of A to the next
    col_b = 1 if read_b[0] == ord("N") else read_b[1]
    steps = np.array([row_a, col_b], np.int64) * a.itemsize
    kind, one_zero = _kind_and_scalars(a)
    by_rows = m >= n
    size = m if by_rows else n
    args = (by_rows, kind, a.ctypes.data, b.ctypes.data, out.ctypes.data, m, n, k, flags, lds,
            steps, one_zero)
    split(lambda lo, hi: block(lo * _BLOCK, min(hi * _BLOCK, size), *args),
          -(-size // _BLOCK), m * n * k, min_work=SPLIT_MIN)
    return True


def _batch(a: np.ndarray, b: np.ndarray, lead: tuple, out: np.ndarray | None
           ) -> np.ndarray | None:
    count = math.prod(lead)
    a, b = np.broadcast_to(a, lead + a.shape[-2:]), np.broadcast_to(b, lead + b.shape[-2:])
    read_a, read_b = _operand(a), _operand(b)
    if read_a is None or read_b is None or count < 1:
        return None
    m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
    out = np.empty(lead + (m, n), a.dtype) if out is None else out
    if count < cores() and m * n * k >= SPLIT_MIN:  # too few products to share: split each
        for i in np.ndindex(lead):
            _one(a[i], b[i], out[i])
        return out
    flags = np.array([read_b[0], read_a[0]], np.int8)
    lds = np.array([read_b[1], read_a[1]], np.int64)
    a_off, b_off = batch_offsets(lead, a, b)
    kind, one_zero = _kind_and_scalars(a)
    split(lambda lo, hi: products(lo, hi, kind, a.ctypes.data, a_off, b.ctypes.data, b_off,
                                  out.ctypes.data, m, n, k, flags, lds, one_zero),
          count, count * m * n * k, min_work=SPLIT_MIN)
    return out
