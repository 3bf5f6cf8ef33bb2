"""Fused backward formulas: one op where a VJP would otherwise emit a chain of elementwise
ops, each a full pass over memory with a fresh temporary. They are ordinary registered ops
with their own VJPs (in graph ops), so gradients of gradients still work."""

from __future__ import annotations

import math

from tgraph import builder as tb
from tgraph.errors import ShapeError
from tgraph.ops.elementwise import GELU_TANH_C, Gelu, gelu_tanh_inner, need_float
from tgraph.ops.reduce import CrossEntropy, Softmax, numel
from tgraph.ops.registry import OpDef, register_op
from tgraph.ops.special import chunked, ndtr
from tgraph.shapes import norm_axis

_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)
_A = 0.044715  # the tanh form's cubic coefficient


@register_op
class GeluGrad(OpDef):
    """g · d gelu(x)/dx: the gradient of GELU (exact or tanh form) in one pass."""

    fresh_result = True

    name = "gelu_grad"
    attr_kinds = {"approximate": ("none", "tanh")}
    signature = 'gelu_grad(x, g, approximate="none"|"tanh") -> like x'

    def infer(self, types, approximate="none"):
        x, g = types
        if x != g:
            raise ShapeError(f"gelu_grad needs x and g of one type, got {x} and {g}")
        return Gelu.infer(self, [x], approximate=approximate)  # same attr and dtype rules

    def kernel(self, xp, x, g, approximate="none"):
        def formula(x, g):
            if approximate == "tanh":  # ½(1 + t) + ½·x·(1 − t²)·u′, t = tanh u
                t = xp.tanh(gelu_tanh_inner(x))
                s = x * x
                s *= 3 * _A * GELU_TANH_C
                s += GELU_TANH_C
                s *= x
                s *= 0.5
                s *= 1 - t * t
                t += 1
                t *= 0.5
                s += t
            else:  # Φ(x) + x·φ(x)
                s = x * x
                s *= -0.5
                xp.exp(s, out=s)
                s *= x
                s *= _INV_SQRT_2PI
                s += ndtr(xp, x)
            s *= g
            return s

        return chunked(formula, x, g, xp=xp)

    def jax_kernel(self, jnp, x, g, approximate="none"):
        if approximate == "tanh":
            t = jnp.tanh(gelu_tanh_inner(x))
            d = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * (GELU_TANH_C + 3 * _A * GELU_TANH_C * x * x)
        else:
            d = ndtr(jnp, x) + x * jnp.exp(-0.5 * x * x) * _INV_SQRT_2PI
        return d * g

    def flops(self, i, o, **attrs):
        return 12 * math.prod(o[0])

    def scalar(self, args, approximate="none"):
        x, g = args
        if approximate == "tanh":
            t = f"math.tanh({GELU_TANH_C!r} * ({x} + {_A!r} * {x} * {x} * {x}))"
            du = f"({GELU_TANH_C!r} * (1.0 + {3 * _A!r} * {x} * {x}))"
            return f"({g} * (0.5 * (1.0 + {t}) + 0.5 * {x} * (1.0 - {t} * {t}) * {du}))"
        return (f"({g} * (math.ndtr({x}) + "
                f"{x} * math.exp(-0.5 * {x} * {x}) * {_INV_SQRT_2PI!r}))")

    def vjp(self, node, grads):
        """With w the cotangent: d/dg = gelu_grad(x, w); d/dx = w·g·gelu''(x)."""
        (x, g), w = node.inputs, grads[0]
        if node.attrs.get("approximate", "none") == "tanh":  # (1 − t²)(u′ − x·t·u′² + 3aC·x²)
            t = tb.tanh((x + x * x * x * _A) * GELU_TANH_C)
            du = (1 + x * x * (3 * _A)) * GELU_TANH_C
            curve = (1 - t * t) * (du - x * t * du * du + x * x * (3 * _A * GELU_TANH_C))
        else:  # φ(x)·(2 − x²)
            curve = tb.exp(x * x * -0.5) * _INV_SQRT_2PI * (2 - x * x)
        return [w * g * curve, tb.apply("gelu_grad", x, w, **node.attrs)]

    def examples(self, rng):
        x, g = rng.standard_normal((2, 3, 7)) * 2, rng.standard_normal((2, 3, 7))
        return [([x, g], {"approximate": "none"}), ([x, g], {"approximate": "tanh"})]

    def label(self, approximate="none"):
        return "GELU′ (tanh)" if approximate == "tanh" else "GELU′"


@register_op
class SoftmaxGrad(OpDef):
    """y · (g − Σ g·y) along the axis: the gradient of softmax from its output y."""

    fresh_result = True

    name = "softmax_grad"
    attr_kinds = {"axis": "int"}
    signature = "softmax_grad(y, g, axis=-1) -> like y"

    def infer(self, types, axis=-1):
        y, g = types
        if y != g:
            raise ShapeError(f"softmax_grad needs y and g of one type, got {y} and {g}")
        norm_axis(axis, y.rank)
        return need_float(y, self.name)

    def kernel(self, xp, y, g, axis=-1):
        out = g * y
        s = out.sum(axis=axis, keepdims=True)
        out -= y * s
        return out

    def flops(self, in_shapes, out_shapes, **attrs):
        return 4 * math.prod(out_shapes[0])

    def vjp(self, node, grads):
        """z = y·g − y·s with s = Σ g·y; w the cotangent of z:
        d/dg = softmax_grad(y, w), d/dy = w·(g − s) − g·Σ w·y."""
        (y, g), w = node.inputs, grads[0]
        axis = [node.attrs.get("axis", -1)]
        s = tb.sum(g * y, axis, keepdims=True)
        gy = w * (g - s) - g * tb.sum(w * y, axis, keepdims=True)
        return [gy, tb.apply("softmax_grad", y, w, **node.attrs)]

    def examples(self, rng):
        y = rng.random((2, 3, 4))
        y /= y.sum(-1, keepdims=True)
        g = rng.standard_normal((2, 3, 4))
        return [([y, g], {"axis": -1}), ([y, g], {"axis": 1})]

    def label(self, axis=-1):
        return f"Softmax′ (axis {axis})"


def layernorm_closed_form(x, gamma, g, eps, residual=None, sum_dx=False):
    """LayerNorm's gradient as graph ops, x̂ recomputed from x: (dx, dγ, dβ) with
    dx = rstd · (ĝ − mean(ĝ) − x̂ · mean(ĝ · x̂)), ĝ = g · gamma (plus ``residual``, when
    given), and dγ, dβ the sums of g·x̂ and g over the leading axes (and with ``sum_dx``,
    dx's)."""
    xc = x - tb.mean(x, -1, keepdims=True)
    rstd = tb.rsqrt(tb.mean(xc * xc, -1, keepdims=True) + eps)
    xhat = xc * rstd
    gh = g * gamma
    dx = (gh - tb.mean(gh, -1, keepdims=True)
          - xhat * tb.mean(gh * xhat, -1, keepdims=True)) * rstd
    if residual is not None:
        dx = residual + dx
    lead = list(range(x.type.rank - 1))
    return dx, *((tb.sum(v, lead) if lead else v) for v in (g * xhat, g, dx)[:3 + sum_dx])


@register_op
class LayernormGrad(OpDef):
    """LayerNorm's gradient from its input: (dx, dγ, dβ) in one pass over each row, where the
    closed form is ~15 elementwise ops, 5 row means and two sums over the leading axes (dγ
    and dβ: the sums of g·x̂ and of g, which the row loop adds up as it goes).

    With a fourth input, the gradient that reaches x around the norm (a residual
    connection's), dx is that plus LayerNorm's: the add the pass residual_into_norm_grad
    (-O2) folds in, one write of dx where there were two and a read. With ``sum_dx``, a
    fourth result: dx summed over the leading axes (the bias gradient of the product dx
    flows back into), which the row loop adds up as it goes."""

    fresh_result = True

    name = "layernorm_grad"
    attr_kinds = {"eps": "eps", "sum_dx": "bool"}
    signature = ("layernorm_grad(x[..., D], gamma[D], g[..., D], [residual[..., D]], "
                 "eps=1e-5, sum_dx=False) -> (dx (+ residual), dγ, dβ, [Σ dx])")

    def infer(self, types, eps=1e-5, sum_dx=False):
        if len(types) not in (3, 4):
            raise ShapeError(f"layernorm_grad takes x, gamma, g and an optional residual, got "
                             f"{len(types)} inputs")
        x, gamma, g = types[:3]
        need_float(x, self.name)
        if (g != x or gamma.shape != x.shape[-1:] or gamma.dtype != x.dtype
                or any(r != x for r in types[3:])):
            raise ShapeError(f"layernorm_grad needs g (and a residual) like x and "
                             f"gamma[{x.shape[-1]}], got {', '.join(map(str, types))}")
        return [x, gamma, gamma, gamma][:3 + bool(sum_dx)]

    def kernel(self, xp, x, gamma, g, residual=None, eps=1e-5, sum_dx=False):
        xc = x - x.mean(axis=-1, keepdims=True)
        rstd = 1 / xp.sqrt((xc * xc).mean(axis=-1, keepdims=True) + eps)
        xhat = xc * rstd
        gh = g * gamma
        dx = (gh - gh.mean(axis=-1, keepdims=True)
              - xhat * (gh * xhat).mean(axis=-1, keepdims=True)) * rstd
        lead = tuple(range(x.ndim - 1))
        dx = dx if residual is None else residual + dx
        return (dx, (g * xhat).sum(axis=lead), g.sum(axis=lead), dx.sum(axis=lead))[
            :3 + bool(sum_dx)]

    def flops(self, in_shapes, out_shapes, **attrs):
        return 16 * math.prod(in_shapes[0])

    def vjp(self, node, grads):
        """The closed form re-emitted as graph ops and differentiated (second derivatives)."""
        from tgraph.autodiff import vjp_of_expansion

        eps, sums = node.attrs.get("eps", 1e-5), bool(node.attrs.get("sum_dx"))
        return vjp_of_expansion(node, grads, lambda *xs: layernorm_closed_form(
            *xs[:3], eps, *xs[3:], sum_dx=sums))

    def examples(self, rng):
        return [([rng.standard_normal(s) * 2 + 1, rng.standard_normal(s[-1:]),
                  *rng.standard_normal((inputs - 2, *s))], {"eps": 1e-5, **more})
                for s, inputs, more in (((2, 3, 6), 3, {}), ((5,), 3, {}), ((2, 3, 6), 4, {}),
                                        ((2, 3, 6), 4, {"sum_dx": True}))]

    def label(self, eps=1e-5, sum_dx=False):
        return "LayerNorm′"


def cross_entropy_closed_form(logits, targets, g):
    """Cross-entropy's gradient as graph ops: (softmax(logits) − one_hot(targets)) · g / N,
    N the number of positions."""
    one_hot = tb.one_hot(targets, logits.shape[-1], dtype=logits.dtype)
    return [(tb.softmax(logits, -1) - one_hot) * (g / numel(targets, dtype=logits.dtype))]


@register_op
class CrossEntropyGrad(OpDef):
    """Cross-entropy's gradient for the logits, (softmax(logits) − one_hot(targets))·g/N, in
    one pass over each row, where the closed form writes a one-hot tensor and the softmax,
    each of the logits' size, then subtracts and scales them."""

    fresh_result = True

    name = "cross_entropy_grad"
    attr_kinds: dict = {}
    signature = "cross_entropy_grad(logits[..., C], targets: int[...], g[]) -> like logits"

    def infer(self, types, **attrs):
        logits, targets, g = types
        CrossEntropy.infer(self, [logits, targets])  # the same rules for logits and targets
        if g.shape != () or g.dtype != logits.dtype:
            raise ShapeError(f"cross_entropy_grad needs a scalar {logits.dtype} g, got {g}")
        return logits

    def kernel(self, xp, logits, targets, g):
        return self._formula(xp, Softmax.kernel(self, xp, logits), targets, g)

    def jax_kernel(self, jnp, logits, targets, g):
        return self._formula(jnp, Softmax.jax_kernel(self, jnp, logits), targets, g)

    @staticmethod
    def _formula(xp, y, targets, g):
        one_hot = targets[..., None] == xp.arange(y.shape[-1])
        return ((y - one_hot) * (g / targets.size)).astype(y.dtype)

    def flops(self, in_shapes, out_shapes, **attrs):
        return 6 * math.prod(out_shapes[0])

    def vjp(self, node, grads):
        """The closed form re-emitted as graph ops and differentiated (second derivatives)."""
        from tgraph.autodiff import vjp_of_expansion

        return vjp_of_expansion(node, grads, cross_entropy_closed_form)

    def examples(self, rng):
        return [([rng.standard_normal((*s, 7)) * 2, rng.integers(0, 7, s),
                  rng.standard_normal(())], {}) for s in ((2, 5), (4,))]

    def label(self, **attrs):
        return "CrossEntropy′"
