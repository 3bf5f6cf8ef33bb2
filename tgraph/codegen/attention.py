"""Attention (``ops/masking.py``'s Attention) and its gradient (AttentionGrad) one (batch,
head) at a time, on tgraph's threads.

For each of the B·H products: S = Q·Kᵀ into a [T, S] buffer of the thread's own, the
masked softmax of its rows into a second one (rows.py's MASKED_SOFTMAX, the same compiled
loop), then that times V into the output. Scores and weights never leave the core's cache
(64 KB each for T = S = 128), where the three ops apart write and read a [B, H, T, S]
tensor twice and split over the cores three times. A causal product runs in blocks of 32
query rows, each block's GEMMs and softmax stopping at the last key its queries may see
(3/8 fewer multiply-adds and exponentials at T = 128). GPT config M, one layer's
[8, 8, 128, 32] heads: 1.47 ms against 1.81 ms for the three ops (with blocks of 64).
Q and V are read as they lie, heads sliced out of one projection included (a leading
dimension each); K is first copied transposed into a thread buffer, so that Q·Kᵀ is a GEMM
of untransposed operands (_TRANSPOSE). The GEMMs are blas.py's BLAS on one thread, as in gemm.py.

The gradient does the same per product and block of query rows: the weights P read from
the forward's (a training graph's attention keeps them) or computed again (scores, then
the masked softmax), dP = G·Vᵀ over the scores' buffer (V copied transposed as K is),
dS = scale·P∘(dP − Σ P∘dP) in place, then dQ = dS·K, and dK += dSᵀ·Q and dV += Pᵀ·G over
the keys the block sees: no softmax gradient or scale runs over a [B, H, T, S] tensor as
ops apart.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from tgraph.codegen.blas import bind, one_thread
from tgraph.codegen.gemm import batch_offsets
from tgraph.codegen.rows import MASKED_SOFTMAX, row_entry, row_kernel
from tgraph.parallel import cores, data_address, split

#: query rows per block of a causal product: a block's products stop at the last key its
#: queries may see. 32 against 64: GPT config M's step 0.990-0.992, its forward 0.988,
#: gpt2-small's forward 0.987 (30-80 interleaved rounds); 16 was no faster than 32 alone
CAUSAL_BLOCK = 32

# the keys (or values) of one product transposed into a thread's buffer: Q·Kᵀ (and G·Vᵀ)
# then reads both operands untransposed, where OpenBLAS packs a transposed [S, 32] operand
# slowly: [64, 32]·[32, 128] on one core 9.3 µs with Kᵀ a view of K, 5.8 µs contiguous
_TRANSPOSE = '''
from numba import njit


@njit(nogil=True)
def transposed(at, ld, rows, cols, into):
    """into[:cols, :rows] = the row-major matrix at address ``at`` (rows × cols, ld
    elements a row) transposed."""
    m = carray(pointer(at, np.float32), (rows, ld))
    for r in range(rows):
        for c in range(cols):
            into[c, r] = m[r, c]
'''

_BODY = '''def kernel(lo, hi, q: int, k: int, v: int, out: int, offsets: "int64 2d", lds: "int64 1d",
           t: int, s: int, d: int, e: int, causal: bool, window: int, scale: float,
           one_zero: "F 1d", block: int, kept: int, slots: "int64 1d", squares: "F 4d",
           panels: "F 4d", scratches: "int64 2d"):
    """out[i] (t×e) = masked_softmax(Q_i·K_iᵀ)·V_i for i in lo..hi; q, k, v, out: addresses;
    offsets: each product's byte offsets into them (rows 0-3); lds: their leading
    dimensions. Rows that see no key are left as they are (zeros, by the caller). kept: 0,
    or the address of a C-contiguous [.., t, s] array the weights are written to. slots,
    squares, panels, scratches: each part's buffers (_run)."""
    # two buffers, not one in place: the row loop vectorizes only when its input and
    # output cannot overlap (in place: 2.5 ms a GPT-M layer, slower than three ops apart)
    part = take_slot(slots)
    scores, local, kt, scratch = squares[part, 0], squares[part, 1], panels[part, 0], \
        scratches[part]
    one = np.int64(one_zero.ctypes.data)  # signed: uint64 + int64 would be a float64
    zero = one + one_zero.itemsize
    itemsize = one_zero.itemsize
    step = block if causal else t
    for i in range(lo, hi):
        weights = carray(pointer(kept + i * t * s * itemsize, np.float32), (t, s)) if kept \
            else local
        transposed(k + offsets[1, i], lds[1], s, d, kt)
        for r0 in range(0, t, step):
            r1 = min(r0 + step, t)
            width = min(s, r1 + s - t) if causal else s  # the keys these queries may see
            if kept:  # the keys past those this block sees weigh 0
                weights[r0:r1, max(width, 0):] = 0.0
            if width <= 0:
                continue
            # row-major scores = Q·Kᵀ is the column-major scoresᵀ = K·Qᵀ, K read from kt
            blas_gemm(115, 78, 78, width, r1 - r0, d, one, kt.ctypes.data, s,
                      q + offsets[0, i] + r0 * lds[0] * itemsize, lds[0], zero,
                      scores.ctypes.data + r0 * s * itemsize, s, scratch)
            softmax_rows(r0, r1, scores, weights, t, causal, window, scale, width)
            blas_gemm(115, 78, 78, e, r1 - r0, width, one, v + offsets[2, i], lds[2],
                      weights.ctypes.data + r0 * s * itemsize, s, zero,
                      out + offsets[3, i] + r0 * lds[3] * itemsize, lds[3], scratch)
'''


_GRAD_TEMPLATE = '''def kernel(lo, hi, q: int, k: int, v: int, g: int, dq: int, dk: int, dv: int,
           offsets: "int64 2d", lds: "int64 1d", t: int, s: int, d: int, e: int, causal: bool,
           window: int, scale: float, one_zero: "F 1d", block: int, kept: int,
           slots: "int64 1d", squares: "F 4d", panels: "F 4d", scratches: "int64 2d"):
    """dq[i] (t×d), dk[i] (s×d), dv[i] (s×e) for i in lo..hi: the gradient of attention's
    product i for its output's gradient g[i]; every array an address, offsets: each
    product's byte offsets into them (rows 0-6), lds: their leading dimensions. dq's rows
    that see no key are left as they are (zeros, by the caller). kept: 0, or the address of
    the weights the forward kept (C-contiguous [.., t, s]), read instead of computed.
    slots, squares, panels, scratches: each part's buffers (_run)."""
    part = take_slot(slots)
    scores, local, scratch = squares[part, 0], squares[part, 1], scratches[part]
    kt, vt = panels[part, 0], panels[part, 1]
    one = np.int64(one_zero.ctypes.data)  # signed: uint64 + int64 would be a float64
    zero = one + one_zero.itemsize
    itemsize = one_zero.itemsize
    step = block if causal else t
    for i in range(lo, hi):
        weights = carray(pointer(kept + i * t * s * itemsize, np.float32), (t, s)) if kept \
            else local
        k_at, v_at = k + offsets[1, i], v + offsets[2, i]
        transposed(v_at, lds[2], s, e, vt)
{recompute_k}        dk_at, dv_at = dk + offsets[5, i], dv + offsets[6, i]
        # the last block first: it sees every key, so its dK and dV products (beta 0) set
        # every row that the other blocks' then add to (beta 1)
        beta = zero
        for r0 in range((t - 1) // step * step, -1, -step):
            r1 = min(r0 + step, t)
            rows = r1 - r0
            width = min(s, r1 + s - t) if causal else s  # the keys these queries may see
            if width <= 0:
                continue
            q_at = q + offsets[0, i] + r0 * lds[0] * itemsize
            g_at = g + offsets[3, i] + r0 * lds[3] * itemsize
            s_at = scores.ctypes.data + r0 * s * itemsize
            w_at = weights.ctypes.data + r0 * s * itemsize
            # row-major X = A·B is the column-major Xᵀ = Bᵀ·Aᵀ: operands swapped
{recompute_p}            blas_gemm(115, 78, 78, width, rows, e, one, vt.ctypes.data, s, g_at, lds[3], zero,
                      s_at, s, scratch)  # dP = G·Vᵀ, over the scores
            for r in range(r0, r1):  # dS = scale·P∘(dP − Σ P∘dP), in place
                total = ACC(0.0)
                for c in range(width):
                    total += weights[r, c] * scores[r, c]
                for c in range(width):
                    scores[r, c] = weights[r, c] * (scores[r, c] - total) * scale
            blas_gemm(115, 78, 84, e, width, rows, one, g_at, lds[3], w_at, s, beta, dv_at,
                      lds[6], scratch)  # dV += Pᵀ·G
            blas_gemm(115, 78, 78, d, rows, width, one, k_at, lds[1], s_at, s, zero,
                      dq + offsets[4, i] + r0 * lds[4] * itemsize, lds[4], scratch)  # dQ = dS·K
            blas_gemm(115, 78, 84, d, width, rows, one, q_at, lds[0], s_at, s, beta, dk_at,
                      lds[5], scratch)  # dK += dSᵀ·Q
            beta = one
'''


# the gradient's two bodies: one computes the weights again from q and k (the graph kept
# none), one reads the forward's (a training graph's) and so neither calls nor compiles the
# softmax rows (gpt2-small's cold -O2 pipeline compiles the gradient in the helper process,
# which compiled the masked softmax, 0.7 s, again beside this one's)
_RECOMPUTE_K = """        transposed(k_at, lds[1], s, d, kt)
"""
_RECOMPUTE_P = """            blas_gemm(115, 78, 78, width, rows, d, one, kt.ctypes.data, s, q_at, lds[0],
                      zero, s_at, s, scratch)  # scores = Q·Kᵀ
            softmax_rows(r0, r1, scores, weights, t, causal, window, scale, width)
"""


def _grad_body(recompute: bool) -> str:
    return (_GRAD_TEMPLATE.replace("{recompute_k}", _RECOMPUTE_K if recompute else "")
            .replace("{recompute_p}", _RECOMPUTE_P if recompute else ""))


_GRAD_BODY, _GRAD_KEPT_BODY = _grad_body(True), _grad_body(False)


def _heads_by_rows(lead: tuple, rows: int, *cols: int) -> list[np.ndarray]:
    """Fresh float32 [*lead, rows, c] arrays for each c in ``cols``, all in one buffer laid
    out [*lead[:-1], rows, len(cols), lead[-1], c]: the heads of a row side by side, as
    merging them back ([B, H, T, E] to [B, T, H·E]: a transpose and a reshape) and
    concatenating the three gradients of a merged projection want them, without a copy."""
    if not lead or len(set(cols)) > 1:
        return [np.empty((*lead, rows, c), np.float32) for c in cols]
    buffer = np.empty((*lead[:-1], rows, len(cols), lead[-1], cols[0]), np.float32)
    return [buffer[..., j, :, :].swapaxes(-3, -2) for j in range(len(cols))]


def _fits(*arrays: np.ndarray) -> bool:
    """float32 matrices whose rows are contiguous, and a BLAS to run them."""
    return not any(x.dtype != np.float32 or x.ndim < 2 or x.strides[-1] != 4
                   or x.strides[-2] < 4 * x.shape[-1] for x in arrays) and bind() is not None


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, causal: bool, window: int,
              scale: float, weights: bool = False) -> np.ndarray | tuple | None:
    """The op's result, its heads laid out by row (and with ``weights`` the weights,
    C-contiguous), or None where this path does not apply (the caller then runs the
    reference): float32 only, each matrix's rows contiguous."""
    if not _fits(q, k, v) or not q.size or not k.shape[-2]:
        return None
    lead, t, s, e = q.shape[:-2], q.shape[-2], k.shape[-2], v.shape[-1]
    out = _heads_by_rows(lead, t, e)[0]
    if causal and s < t:
        out[...] = 0  # queries before the first key see none
    kept = np.empty((*lead, t, s), np.float32) if weights else None
    _run(_BODY, (q, k, v, out), causal, window, scale, kept, passes=1)
    return (out, kept) if weights else out


def attention_grad(q: np.ndarray, k: np.ndarray, v: np.ndarray, g: np.ndarray, causal: bool,
                   window: int, scale: float, kept: np.ndarray | None = None) -> tuple | None:
    """(dq, dk, dv), or None where this path does not apply (as ``attention``); ``kept``:
    the weights the forward kept, read where they are a C-contiguous float32 array (they
    must be attention's own: the masked entries zero)."""
    if not _fits(q, k, v, g) or not q.size or not k.shape[-2] or not v.shape[-1]:
        return None
    if kept is not None and (kept.dtype != np.float32 or not kept.flags.c_contiguous
                             or kept.shape != (*q.shape[:-1], k.shape[-2])):
        return None
    lead = q.shape[:-2]
    (t, d), s, e = q.shape[-2:], k.shape[-2], v.shape[-1]
    if t == s:
        dq, dk, dv = _heads_by_rows(lead, t, d, d, e)
    else:
        (dq,), (dk, dv) = _heads_by_rows(lead, t, d), _heads_by_rows(lead, s, d, e)
    if causal and s < t:
        dq[...] = 0  # queries before the first key see none
    _run(_GRAD_BODY if kept is None else _GRAD_KEPT_BODY, (q, k, v, g, dq, dk, dv), causal,
         window, scale, kept, passes=2 if kept is not None else 3)
    return dq, dk, dv


@functools.lru_cache(maxsize=256)
def _layout(body: str, lead: tuple, strides: tuple) -> tuple:
    """``body``'s entry, each product's byte offsets into the arrays with these strides and
    their leading dimensions (read-only): the same every step of a training loop, and
    computing them took ~100 µs of each attention call in a GPT config M step."""
    imports = ("from tgraph.codegen.gemm import blas_gemm\n"
               "from tgraph.parallel import take_slot\n" + _TRANSPOSE)
    if "softmax_rows(" in body:  # the masked softmax rows: one jitted module the kernels
        # import (compiled once, not twice), imported before the entry, which compiles
        # where it is defined
        softmax = row_kernel(MASKED_SOFTMAX, np.float32).py_func.__module__
        imports += f"from {softmax} import kernel as softmax_rows\n"
    offsets = batch_offsets(lead, *strides)
    lds = np.array([st[-2] // 4 for st in strides], np.int64)
    offsets.flags.writeable = lds.flags.writeable = False
    return row_entry(body, np.dtype(np.float32), imports), offsets, lds


def _run(body: str, arrays: tuple, causal: bool, window: int, scale: float,
         kept: np.ndarray | None, passes: int):
    """``body``'s kernel over every (batch, head) product, split over the cores; arrays: q,
    k, v, then the rest, each passed as its address, product offsets and leading dimension;
    ``kept``: the weights, C-contiguous, written (forward) or read (gradient), or None."""
    q, k, v = arrays[:3]
    lead = q.shape[:-2]
    (t, d), s, e = q.shape[-2:], k.shape[-2], v.shape[-1]
    count = math.prod(lead)
    entry, offsets, lds = _layout(body, lead, tuple(x.strides for x in arrays))
    parts = cores()  # the most a split makes: each part takes one set of buffers
    try:  # allocated here, not in the loop: np.empty and its failure path in a C entry
        # took 0.4-0.6 s of the cold compile of each of the two kernels
        squares = np.empty((parts, 2, t, s), np.float32)  # scores, weights
        panels = np.empty((parts, 2, max(d, e), s), np.float32)  # Kᵀ, Vᵀ
    except (MemoryError, ValueError):
        raise MemoryError(f"attention: no memory for a thread's two [{t}, {s}] float32 "
                          "buffers of scores and weights") from None
    one_zero = np.array([1, 0], np.float32)
    with one_thread():
        split(entry.job(*(data_address(x) for x in arrays), offsets, lds, t, s, d, e, causal,
                        window, scale, one_zero, CAUSAL_BLOCK,
                        0 if kept is None else data_address(kept), np.zeros(1, np.int64),
                        squares, panels, np.empty((parts, 8), np.int64)),
              count, passes * count * t * s)
