"""The NumPy backend's faster kernels, by op name: each takes the registry kernel's place
where its arrays allow and hands over to it otherwise, so results agree to rounding.

- ``softmax``, ``softmax_grad``, ``layernorm``, ``layernorm_grad``, ``cross_entropy`` and
  ``cross_entropy_grad`` along the last axis,
  ``mask`` from a causal or window pattern, and ``masked_softmax`` (the two as one): one
  compiled loop per row (tgraph/codegen/rows.py), rows split over the cores. NumPy takes
  3-5 passes and temporaries for each.
- ``scatter_add`` (an embedding's gradient): rows added in order by one loop, where
  ``np.add.at`` takes ~1.5 ms for 1,024 rows of 256; onto its base in place when the
  executor hands over a dying one.
- ``attention``: masked_softmax(q·kᵀ)·v one (batch, head) at a time, the weights in the
  core's cache (tgraph/codegen/attention.py); ``attention_grad`` likewise, the weights
  recomputed a head at a time.
- ``concat`` of views that already lie side by side in one array: a view of it.
- ``matmul``: BLAS GEMMs on the arrays as they lie, split over tgraph's kernel threads, one
  GEMM's rows or a batch's products (tgraph/codegen/gemm.py).

Those with an ``out`` argument write into the executor's planned buffer when given one
(tgraph/memplan.py) and return it; where they hand over to the registry's kernel, that
returns a fresh array instead.
"""

from __future__ import annotations

import weakref

import numpy as np

from tgraph.ops.registry import get_op
from tgraph.parallel import data_address, split


def _rows(body: str, op: str):
    from tgraph.codegen.rows import row_entry

    def kernel(xp, *arrays, axis=-1, out=None):
        x = arrays[0]
        if (axis % x.ndim != x.ndim - 1 or x.dtype.kind != "f" or not x.size
                or any(a.dtype != x.dtype or a.shape != x.shape for a in arrays)):
            return get_op(op).kernel(xp, *arrays, axis=axis)
        rows = [np.ascontiguousarray(a).reshape(-1, x.shape[-1]) for a in arrays]
        dst = _rows_of(out, rows[0])
        entry = row_entry(body, x.dtype)
        split(entry.job(*rows, dst), len(dst), x.size, key=(entry.address, x.shape))
        return _result(out, dst, x.shape)

    return kernel


def _rows_of(out, rows: np.ndarray) -> np.ndarray:
    """Where a row kernel writes: the executor's planned ``out`` (contiguous, of the
    result's shape and dtype) seen as rows, else a new array."""
    return np.empty_like(rows) if out is None else out.reshape(rows.shape)


def _result(out, dst: np.ndarray, shape) -> np.ndarray:
    """``out`` itself when given (the executor knows its buffer by identity)."""
    return dst.reshape(shape) if out is None else out


def mask(xp, x, *keep, causal=False, window=0, fill="-inf"):
    from tgraph.codegen.rows import MASK, row_entry

    if keep or x.dtype.kind != "f" or not x.size:
        return get_op("mask").kernel(xp, x, *keep, causal=causal, window=window, fill=fill)
    rows = np.ascontiguousarray(x).reshape(-1, x.shape[-1])
    out = np.empty_like(rows)
    entry = row_entry(MASK, x.dtype)
    split(entry.job(rows, out, x.shape[-2], causal, window, float(x.dtype.type(float(fill)))),
          len(out), x.size, key=(entry.address, x.shape))
    return out.reshape(x.shape)


def masked_softmax(xp, x, causal=False, window=0, scale=1.0, out=None):
    from tgraph.codegen.rows import MASKED_SOFTMAX, row_entry

    if x.dtype.kind != "f" or not x.size:
        return get_op("masked_softmax").kernel(xp, x, causal=causal, window=window, scale=scale)
    rows = np.ascontiguousarray(x).reshape(-1, x.shape[-1])
    dst = _rows_of(out, rows)
    entry = row_entry(MASKED_SOFTMAX, x.dtype)
    split(entry.job(rows, dst, x.shape[-2], causal, window, scale, x.shape[-1]), len(dst),
          x.size, key=(entry.address, x.shape))
    return _result(out, dst, x.shape)


def layernorm(xp, x, g, b, eps=1e-5, out=None):
    from tgraph.codegen.rows import LAYERNORM, row_entry

    if x.dtype.kind != "f" or not x.size or g.dtype != x.dtype or b.dtype != x.dtype:
        return get_op("layernorm").kernel(xp, x, g, b, eps=eps)
    rows = np.ascontiguousarray(x).reshape(-1, x.shape[-1])
    g, b = np.ascontiguousarray(g), np.ascontiguousarray(b)
    dst = _rows_of(out, rows)
    entry = row_entry(LAYERNORM, x.dtype)
    split(entry.job(rows, g, b, dst, eps), len(dst), x.size, key=(entry.address, x.shape))
    return _result(out, dst, x.shape)


#: rows whose dγ, dβ and Σdx parts one kernel call sums (rows.py's LAYERNORM_GRAD)
LAYERNORM_GRAD_CHUNK = 64


def layernorm_grad(xp, x, gamma, g, residual=None, eps=1e-5, sum_dx=False):
    from tgraph.codegen.rows import LAYERNORM_GRAD, row_entry

    extra = () if residual is None else (residual,)
    if (x.dtype.kind != "f" or not x.size or gamma.dtype != x.dtype
            or any(a.dtype != x.dtype or a.shape != x.shape for a in (g, *extra))):
        return get_op("layernorm_grad").kernel(xp, x, gamma, g, *extra, eps=eps, sum_dx=sum_dx)
    rows, grads, *extra = (np.ascontiguousarray(a).reshape(-1, x.shape[-1])
                           for a in (x, g, *extra))
    gamma = np.ascontiguousarray(gamma)
    dx = np.empty_like(rows)
    chunks = -(-len(rows) // LAYERNORM_GRAD_CHUNK)
    part = np.empty((chunks, 3, rows.shape[1]), np.float64)
    entry = row_entry(LAYERNORM_GRAD, x.dtype)
    split(entry.job(rows, gamma, grads, extra[0] if extra else rows, bool(extra), dx, part,
                    LAYERNORM_GRAD_CHUNK, eps), chunks, 2 * x.size, key=(entry.address, x.shape))
    sums = part.sum(axis=0).astype(x.dtype)
    return dx.reshape(x.shape), *sums[:3 if sum_dx else 2]


def scatter_add(xp, upd, idx, base=None, shape=(), into=None):
    """``into``: the executor's array to write the result in (a dying ``base``)."""
    from tgraph.codegen.rows import SCATTER_ROWS, row_entry

    rows = int(shape[0]) if shape else 0
    if (upd.dtype.kind != "f" or not idx.size or len(shape) != 2 or idx.dtype.kind not in "iu"
            or idx.min() < 0 or idx.max() >= rows):  # the registry kernel says why
        return get_op("scatter_add").kernel(xp, upd, idx, base, shape=shape)
    if into is not None:
        out = into
    else:
        out = np.zeros(shape, upd.dtype) if base is None else np.array(base, order="C")
    flat = np.ascontiguousarray(upd).reshape(-1, shape[1])
    ids = np.ascontiguousarray(idx, dtype=np.int64).reshape(-1)
    row_entry(SCATTER_ROWS, upd.dtype)(0, len(ids), flat, ids, out)
    return out


def _logit_rows(logits, targets) -> tuple[np.ndarray, np.ndarray] | None:
    """The logits as contiguous rows and the targets as int64, or None where a row loop does
    not apply: not float, empty, or a target outside [0, classes) (the loops read
    x[r, target] unchecked; the registry kernel says why or handles it)."""
    n = logits.shape[-1]
    if (logits.dtype.kind != "f" or not targets.size or n == 0
            or targets.min() < 0 or targets.max() >= n):
        return None
    return (np.ascontiguousarray(logits).reshape(-1, n),
            np.ascontiguousarray(targets, dtype=np.int64).reshape(-1))


def cross_entropy(xp, logits, targets):
    from tgraph.codegen.rows import CROSS_ENTROPY, row_entry

    laid_out = _logit_rows(logits, targets)
    if laid_out is None:
        return get_op("cross_entropy").kernel(xp, logits, targets)
    rows, ids = laid_out
    per_row = np.empty(len(rows), np.float64)
    entry = row_entry(CROSS_ENTROPY, logits.dtype)
    split(entry.job(rows, ids, per_row), len(rows), logits.size,
          key=(entry.address, logits.shape))
    return np.asarray(per_row.mean(), dtype=logits.dtype)


def cross_entropy_grad(xp, logits, targets, g):
    from tgraph.codegen.rows import CROSS_ENTROPY_GRAD, row_entry

    laid_out = _logit_rows(logits, targets)
    if laid_out is None:
        return get_op("cross_entropy_grad").kernel(xp, logits, targets, g)
    rows, ids = laid_out
    out = np.empty_like(rows)
    entry = row_entry(CROSS_ENTROPY_GRAD, logits.dtype)
    scale = float(g / logits.dtype.type(targets.size))  # g / N in the dtype, as the op's
    split(entry.job(rows, ids, out, scale), len(rows), logits.size,
          key=(entry.address, logits.shape))
    return out.reshape(logits.shape)


def attention(xp, q, k, v, causal=False, window=0, scale=1.0, weights=False):
    from tgraph.codegen.attention import attention as fused

    res = fused(q, k, v, causal, window, scale, weights)
    if res is None:
        return get_op("attention").kernel(xp, q, k, v, causal=causal, window=window,
                                          scale=scale, weights=weights)
    return res


def attention_grad(xp, q, k, v, g, *kept, causal=False, window=0, scale=1.0):
    from tgraph.codegen.attention import attention_grad as fused

    res = fused(q, k, v, g, causal, window, scale, *kept)
    if res is None:
        return get_op("attention_grad").kernel(xp, q, k, v, g, *kept, causal=causal,
                                               window=window, scale=scale)
    return res


#: concats whose inputs were cut side by side from one whole array, by their inputs' ids:
#: (weak references to the inputs, their layouts, to that array). A packed dict's weights
#: (tg.pack_params) are the same views every run; checking 36 heads again by address took
#: 100-190 µs a concat. The array lives as long as its views do.
_SIDE_BY_SIDE: dict[tuple, tuple] = {}
_SIDE_BY_SIDE_MAX = 1024


def concat(xp, *xs, axis):
    key = (axis, *map(id, xs))
    known = _SIDE_BY_SIDE.get(key)
    # a view's memory stays where it is (it cannot be resized): the same objects with the
    # same layout are that array again
    if known is not None and all(r() is x for r, x in zip(known[0], xs)) \
            and known[1] == [(x.shape, x.strides) for x in xs]:
        return known[2]()
    joined = side_by_side(xs, axis)
    if joined is None:
        return get_op("concat").kernel(xp, *xs, axis=axis)
    if joined.base is None:  # the whole array (a strided view is rebuilt each time)
        if len(_SIDE_BY_SIDE) >= _SIDE_BY_SIDE_MAX:
            _SIDE_BY_SIDE.clear()
        _SIDE_BY_SIDE[key] = ([weakref.ref(x) for x in xs], [(x.shape, x.strides) for x in xs],
                              weakref.ref(joined))
    return joined


def side_by_side(xs, axis: int) -> np.ndarray | None:
    """The concatenation of ``xs`` along ``axis`` as a view, where they are views of one
    array that follow each other along that axis with one layout (attention_grad's dq, dk
    and dv, merged back into one projection's gradient); else None."""
    first = xs[0]
    ax = axis % first.ndim
    others = first.shape[:ax] + first.shape[ax + 1:]
    if len(xs) < 2 or first.base is None or first.strides[ax] <= 0 or any(
            x.base is not first.base or x.dtype != first.dtype or x.strides != first.strides
            or x.shape[:ax] + x.shape[ax + 1:] != others for x in xs):
        return None
    start = at = data_address(first)
    for x in xs:
        if data_address(x) != at:
            return None
        at += x.shape[ax] * x.strides[ax]
    shape = (*first.shape[:ax], sum(x.shape[ax] for x in xs), *others[ax:])
    base = first.base
    if (isinstance(base, np.ndarray) and base.shape == shape and base.strides == first.strides
            and data_address(base) == start):
        return base  # the whole array they were cut from (pack_params' weights)
    return np.lib.stride_tricks.as_strided(first, shape, first.strides)


def matmul(xp, a, b, out=None):
    from tgraph.codegen import gemm

    res = gemm.matmul(a, b, out)
    return get_op("matmul").kernel(xp, a, b) if res is None else res


def _kernels() -> dict:
    from tgraph.codegen.rows import SOFTMAX, SOFTMAX_GRAD

    return {"softmax": _rows(SOFTMAX, "softmax"),
            "softmax_grad": _rows(SOFTMAX_GRAD, "softmax_grad"), "mask": mask,
            "masked_softmax": masked_softmax, "attention": attention,
            "attention_grad": attention_grad, "layernorm": layernorm,
            "layernorm_grad": layernorm_grad,
            "cross_entropy": cross_entropy, "cross_entropy_grad": cross_entropy_grad,
            "matmul": matmul, "scatter_add": scatter_add,
            "concat": concat}


KERNELS = _kernels()
