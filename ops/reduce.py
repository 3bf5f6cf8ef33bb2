"""Reductions and the normalising ops: sum/mean/max, softmax, layernorm, cross_entropy."""

from __future__ import annotations

import math

from tgraph.ops.elementwise import need_float
from tgraph.ops.registry import OpDef, register_op
from tgraph.errors import ShapeError
from tgraph.shapes import INT_DTYPES, fmt_shape, norm_axis
from tgraph.types import TensorType


def reduced_axes(rank: int, axes) -> tuple[int, ...]:
    if axes is None:
        return tuple(range(rank))
    axes = [axes] if isinstance(axes, int) else axes
    out = tuple(sorted(norm_axis(a, rank) for a in axes))
    if len(set(out)) != len(out):
        raise ShapeError(f"repeated reduction axes {axes}")
    return out


def reduced_shape(shape, axes, keepdims: bool) -> tuple:
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


class Reduction(OpDef):
    @property
    def signature(self):
        return f"{self.name}(x, axes=None|[int], keepdims=False) -> reduced x"

    def infer(self, types, axes=None, keepdims=False):
        (t,) = types
        return t.with_shape(reduced_shape(t.shape, reduced_axes(t.rank, axes), keepdims))

    def kernel(self, xp, x, axes=None, keepdims=False):
        ax = None if axes is None else tuple(axes) if not isinstance(axes, int) else axes
        return getattr(xp, self.name)(x, axis=ax, keepdims=keepdims)

    def flops(self, in_shapes, out_shapes, **attrs):
        return math.prod(in_shapes[0])

    def label(self, axes=None, keepdims=False):
        return f"{self.name} axes={list(axes) if axes is not None else 'all'}"


@register_op
class Sum(Reduction):
    """Sum over axes."""

    name = "sum"


@register_op
class Mean(Reduction):
    """Mean over axes."""

    name = "mean"


@register_op
class Max(Reduction):
    """Maximum over axes."""

    name = "max"


@register_op
class Softmax(OpDef):
    """exp(x − max) / Σ exp along one axis; a fully masked (all −inf) row gives zeros, not NaN."""

    name = "softmax"
    signature = "softmax(x, axis=-1) -> like x"

    def infer(self, types, axis=-1):
        norm_axis(axis, types[0].rank)
        return need_float(types[0], self.name)

    def kernel(self, xp, x, axis=-1):
        m = x.max(axis=axis, keepdims=True)
        m = xp.where(xp.isfinite(m), m, 0)
        e = xp.exp(x - m)
        s = e.sum(axis=axis, keepdims=True)
        return e / xp.where(s == 0, 1, s)

    def flops(self, in_shapes, out_shapes, **attrs):
        return 5 * math.prod(in_shapes[0])

    def label(self, axis=-1):
        return f"Softmax (axis {axis})"


@register_op
class Layernorm(OpDef):
    """(x − mean) / √(var + eps) · gamma + beta over the last axis, as one primitive."""

    name = "layernorm"
    signature = "layernorm(x[..., D], gamma[D], beta[D], eps=1e-5) -> like x"

    def infer(self, types, eps=1e-5):
        x, g, b = types
        need_float(x, self.name)
        for name, t in (("gamma", g), ("beta", b)):
            if t.shape != x.shape[-1:] or t.dtype != x.dtype:
                raise ShapeError(f"layernorm {name} must be {x.dtype}[{fmt_shape(x.shape[-1:])}], "
                                 f"got {t}")
        return x

    def kernel(self, xp, x, g, b, eps=1e-5):
        mu = x.mean(axis=-1, keepdims=True)
        xc = x - mu
        var = (xc * xc).mean(axis=-1, keepdims=True)
        return xc * (1 / xp.sqrt(var + eps)) * g + b

    def flops(self, in_shapes, out_shapes, **attrs):
        return 8 * math.prod(in_shapes[0])

    def label(self, eps=1e-5):
        return "LayerNorm"


@register_op
class CrossEntropy(OpDef):
    """Mean over positions of −log softmax(logits)[target]."""

    name = "cross_entropy"
    signature = "cross_entropy(logits[..., C], targets: int[...]) -> scalar mean"

    def infer(self, types, **attrs):
        logits, targets = types
        need_float(logits, self.name)
        if targets.dtype not in INT_DTYPES:
            raise ShapeError(f"cross_entropy targets must be int, got {targets.dtype}")
        if logits.shape[:-1] != targets.shape:
            raise ShapeError(f"cross_entropy targets shape {fmt_shape(targets.shape)} must equal "
                             f"logits shape without the class axis, {fmt_shape(logits.shape[:-1])}")
        return TensorType(logits.dtype, ())

    def kernel(self, xp, logits, targets):
        m = logits.max(axis=-1, keepdims=True)
        lse = xp.log(xp.exp(logits - m).sum(axis=-1, keepdims=True)) + m
        picked = xp.take_along_axis(logits, targets[..., None].astype(xp.int64), axis=-1)
        return (lse - picked).mean().astype(logits.dtype)

    def flops(self, in_shapes, out_shapes, **attrs):
        return 5 * math.prod(in_shapes[0])

    def label(self, **attrs):
        return "CrossEntropy (mean)"
