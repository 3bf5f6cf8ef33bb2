"""Attention (``ops/masking.py``'s Attention) one (batch, head) at a time, on tgraph's threads.

For each of the B·H products: S = Q·Kᵀ into a [T, S] buffer of the thread's own, the
masked softmax of its rows into a second one (rows.py's MASKED_SOFTMAX, the same loop),
then that times V into the output. Scores and weights never leave the core's cache (64 KB
each for T = S = 128), where the three ops apart write and read a [B, H, T, S] tensor twice
and split over the cores three times. A causal product runs in blocks of 64 query rows,
each block's GEMMs stopping at the last key its queries may see (a quarter fewer
multiply-adds at T = 128). GPT config M, one layer's [8, 8, 128, 32] heads: 1.47 ms
against 1.81 ms for the three ops. Q, K and V are read as they lie, heads sliced out of one
projection included (a leading dimension each). The GEMMs are blas.py's BLAS on one thread,
as in gemm.py.
"""

from __future__ import annotations

import math

import numpy as np

from tgraph.codegen.blas import bind, one_thread
from tgraph.codegen.gemm import batch_offsets
from tgraph.codegen.rows import MASKED_SOFTMAX, row_kernel
from tgraph.parallel import split

#: query rows per block of a causal product: a block's products stop at the last key its
#: queries may see
CAUSAL_BLOCK = 64

_BODY = MASKED_SOFTMAX.replace("def kernel(", "def softmax_rows(", 1) + '''

from tgraph.codegen.gemm import blas_gemm


@njit(cache=True, nogil=True, error_model='numpy',
      fastmath={"contract", "nsz", "arcp", "reassoc"})
def kernel(lo, hi, q, k, v, offsets, lds, out, t, s, d, e, causal, window, scale,
           one_zero, block):
    """out[i] (t×e, contiguous; ``out`` flat) = masked_softmax(Q_i·K_iᵀ)·V_i for i in
    lo..hi; q, k, v: addresses; offsets: each product's byte offsets into them (rows 0-2);
    lds: their leading dimensions."""
    # two buffers, not one in place: the row loop vectorizes only when its input and
    # output cannot overlap (in place: 2.5 ms a GPT-M layer, slower than three ops apart)
    scores, weights = np.empty((t, s), one_zero.dtype), np.empty((t, s), one_zero.dtype)
    scratch = np.empty(8, np.int32)
    one, zero = one_zero.ctypes.data, one_zero.ctypes.data + one_zero.itemsize
    itemsize = one_zero.itemsize
    out_at = out.ctypes.data
    step = block if causal else t
    for i in range(lo, hi):
        for r0 in range(0, t, step):
            r1 = min(r0 + step, t)
            width = min(s, r1 + s - t) if causal else s  # the keys these queries may see
            if width <= 0:
                for j in range(r0 * e, r1 * e):
                    out[i * t * e + j] = 0.0
                continue
            # row-major scores = Q·Kᵀ is the column-major scoresᵀ = K·Qᵀ
            blas_gemm(115, 84, 78, width, r1 - r0, d, one, k + offsets[1, i], lds[1],
                      q + offsets[0, i] + r0 * lds[0] * itemsize, lds[0], zero,
                      scores.ctypes.data + r0 * s * itemsize, s, scratch)
            softmax_rows(r0, r1, scores, weights, t, causal, window, scale)
            blas_gemm(115, 78, 78, e, r1 - r0, width, one, v + offsets[2, i], lds[2],
                      weights.ctypes.data + r0 * s * itemsize, s, zero,
                      out_at + (i * t + r0) * e * itemsize, e, scratch)
'''


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, causal: bool, window: int,
              scale: float, out: np.ndarray | None = None) -> np.ndarray | None:
    """The op's result (into ``out``, C-contiguous, when given), or None where this path
    does not apply (the caller then runs the reference): float32 only, each matrix's rows
    contiguous."""
    if (any(x.dtype != np.float32 or x.strides[-1] != 4 or x.strides[-2] < 4 * x.shape[-1]
            or x.ndim < 2 for x in (q, k, v)) or bind() is None
            or not q.size or not k.shape[-2]):
        return None
    lead = q.shape[:-2]
    (t, d), s, e = q.shape[-2:], k.shape[-2], v.shape[-1]
    count = math.prod(lead)
    out = np.empty((*lead, t, e), np.float32) if out is None else out
    offsets = batch_offsets(lead, q, k, v)
    lds = np.array([x.strides[-2] // 4 for x in (q, k, v)], np.int64)
    fn = row_kernel(_BODY, np.float32)
    one_zero = np.array([1, 0], np.float32)
    with one_thread():
        split(lambda lo, hi: fn(lo, hi, q.ctypes.data, k.ctypes.data, v.ctypes.data, offsets,
                                lds, out.reshape(-1), t, s, d, e,
                                bool(causal), int(window), float(scale), one_zero, CAUSAL_BLOCK),
              count, count * t * s)
    return out
