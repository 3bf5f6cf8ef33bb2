"""Reductions and the normalising ops: sum/mean/max, softmax, layernorm, cross_entropy."""

from __future__ import annotations

import math

from tgraph import builder as tb
from tgraph.errors import ShapeError
from tgraph.ops.elementwise import need_float
from tgraph.ops.registry import OpDef, Param, register_op
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
    fresh_result = True
    attr_kinds = {"axes": "axes?", "keepdims": "bool"}

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

    def vjp(self, node, grads):
        (x,), g = node.inputs, grads[0]
        axes = reduced_axes(x.type.rank, node.attrs.get("axes"))
        kept = reduced_shape(x.shape, axes, True)
        if not node.attrs.get("keepdims"):
            g = tb.reshape(g, kept)
        return [self.spread(x, node.output, g, list(axes))]

    def spread(self, x, y, g, axes):
        """Cotangent of x from g (reduced axes kept as size 1); y is the forward output."""
        raise NotImplementedError

    def examples(self, rng):
        x = rng.standard_normal((2, 3, 4))
        return [([x], {"axes": axes, "keepdims": keep})
                for axes, keep in ((None, False), ([1], True), ([0, 2], False), ([-1], False))]


@register_op
class Sum(Reduction):
    """Sum over axes."""

    name = "sum"

    def spread(self, x, y, g, axes):
        return tb.broadcast_to(g, x.shape)


@register_op
class Mean(Reduction):
    """Mean over axes."""

    name = "mean"

    def spread(self, x, y, g, axes):
        return tb.broadcast_to(g / numel(x, axes), x.shape)


@register_op
class Max(Reduction):
    """Maximum over axes."""

    name = "max"

    def spread(self, x, y, g, axes):
        # ties share the gradient equally, as PyTorch's amax does
        hit = tb.cast(tb.compare(x, tb.reshape(y, g.shape), "=="), x.dtype)
        return hit * (g / tb.sum(hit, axes, keepdims=True))


def numel(x, axes=None, dtype=None):
    return tb.apply("numel", x, axes=axes, dtype=dtype or x.dtype)


@register_op
class Numel(OpDef):
    """Element count of x over axes (all by default) as a scalar, read from x's shape at run
    time: the divisor of a mean's gradient when dims are symbolic such as B·T."""

    fresh_result = True

    name = "numel"
    attr_kinds = {"axes": "axes?", "dtype": "dtype"}
    shape_only = True
    signature = 'numel(x, axes=None, dtype="float32") -> scalar'

    def infer(self, types, axes=None, dtype="float32"):
        reduced_axes(types[0].rank, axes)
        return TensorType(dtype, ())

    def kernel(self, xp, x, axes=None, dtype="float32"):
        return xp.asarray(math.prod(x.shape[a] for a in reduced_axes(x.ndim, axes)), dtype=dtype)

    def vjp(self, node, grads):
        return [None]  # a function of the shape only

    def flops(self, in_shapes, out_shapes, **attrs):
        return 0

    def examples(self, rng):
        return [([rng.standard_normal((2, 3, 4))], {"axes": [0, 2], "dtype": "float64"}),
                ([rng.integers(0, 5, (3, 2))], {})]


@register_op
class Softmax(OpDef):
    """exp(x − max) / Σ exp along one axis; a fully masked (all −inf) row gives zeros, not NaN."""

    fresh_result = True

    name = "softmax"
    attr_kinds = {"axis": "int"}
    signature = "softmax(x, axis=-1) -> like x"

    def infer(self, types, axis=-1):
        norm_axis(axis, types[0].rank)
        return need_float(types[0], self.name)

    def kernel(self, xp, x, axis=-1):
        m = x.max(axis=axis, keepdims=True)
        m[~xp.isfinite(m)] = 0
        e = x - m  # in place from here on: one temporary, not one per step
        xp.exp(e, out=e)
        s = e.sum(axis=axis, keepdims=True)
        s[s == 0] = 1
        e /= s
        return e

    def jax_kernel(self, jnp, x, axis=-1):
        m = x.max(axis=axis, keepdims=True)
        e = jnp.exp(x - jnp.where(jnp.isfinite(m), m, 0))
        s = e.sum(axis=axis, keepdims=True)
        return e / jnp.where(s == 0, 1, s)

    def flops(self, in_shapes, out_shapes, **attrs):
        return 5 * math.prod(in_shapes[0])

    def label(self, axis=-1):
        return f"Softmax (axis {axis})"

    def vjp(self, node, grads):
        return [tb.apply("softmax_grad", node.output, grads[0], **node.attrs)]

    def examples(self, rng):
        x = rng.standard_normal((2, 3, 4)) * 3
        return [([x], {"axis": -1}), ([x], {"axis": 1})]


@register_op
class Layernorm(OpDef):
    """(x − mean) / √(var + eps) · gamma + beta over the last axis, as one primitive."""

    fresh_result = True

    name = "layernorm"
    attr_kinds = {"eps": "eps"}
    signature = "layernorm(x[..., D], gamma[D], beta[D], eps=1e-5) -> like x"

    def infer(self, types, eps=1e-5):
        x, g, b = types
        need_float(x, self.name)
        for name, t in (("gamma", g), ("beta", b)):
            if t.shape != x.shape[-1:] or t.dtype != x.dtype:
                raise ShapeError(f"layernorm {name} must be {x.dtype}[{fmt_shape(x.shape[-1:])}], "
                                 f"got {t}")
        return x

    def params(self, x, eps=1e-5):
        return [Param("gamma", x.shape[-1:], {"dist": "ones"}),
                Param("beta", x.shape[-1:], {"dist": "zeros"})]

    def kernel(self, xp, x, g, b, eps=1e-5):
        mu = x.mean(axis=-1, keepdims=True)
        xc = x - mu
        var = (xc * xc).mean(axis=-1, keepdims=True)
        return xc * (1 / xp.sqrt(var + eps)) * g + b

    def flops(self, in_shapes, out_shapes, **attrs):
        return 8 * math.prod(in_shapes[0])

    def label(self, eps=1e-5):
        return "LayerNorm"

    def vjp(self, node, grads):
        """One layernorm_grad op (ops/fused_grads.py) for dx, dγ and dβ, x̂ recomputed from x
        (cheaper to keep than mean and rstd)."""
        (x, gamma, _), g = node.inputs, grads[0]
        return list(tb.apply("layernorm_grad", x, gamma, g, eps=node.attrs.get("eps", 1e-5)))

    def examples(self, rng):
        return [([rng.standard_normal(s) * 2 + 1, rng.standard_normal(s[-1:]),
                  rng.standard_normal(s[-1:])], {"eps": 1e-5}) for s in ((2, 3, 6), (5,))]


@register_op
class CrossEntropy(OpDef):
    """Mean over positions of −log softmax(logits)[target]."""

    fresh_result = True

    name = "cross_entropy"
    attr_kinds: dict = {}
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

    def vjp(self, node, grads):
        """(softmax(logits) − one_hot(targets)) · g / N, N the number of positions, as one
        cross_entropy_grad op (ops/fused_grads.py)."""
        (logits, targets), g = node.inputs, grads[0]
        return [tb.apply("cross_entropy_grad", logits, targets, g), None]

    def examples(self, rng):
        return [([rng.standard_normal((*s, 7)) * 2, rng.integers(0, 7, s)], {})
                for s in ((2, 5), (4,))]
