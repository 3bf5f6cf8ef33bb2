"""SwiGLU (the gated feed-forward unit of PaLM and LLaMA) and RMSNorm, written the way
tgraph's built-in ops are: a shape rule, one kernel against ``xp`` (NumPy or CuPy), a VJP
made of graph ops (so the backward pass stays a graph), a FLOP count, a diagram label, and
examples for ``tgraph ops --check``. Importing this module registers both ops."""

from __future__ import annotations

import math

from tgraph import builder as tb
from tgraph.errors import ShapeError
from tgraph.ops import OpDef, Param, register_op, unbroadcast
from tgraph.shapes import FLOAT_DTYPES


@register_op
class SwiGLU(OpDef):
    """silu(gate) · up = gate · σ(gate) · up, elementwise: the gated feed-forward unit."""

    name = "swiglu"
    signature = "swiglu(gate[..., F], up[..., F]) -> like gate"

    def infer(self, types):
        gate, up = types
        if gate != up or gate.dtype not in FLOAT_DTYPES:
            raise ShapeError(f"swiglu needs float gate and up of one type, got {gate} and {up}")
        return gate

    def kernel(self, xp, gate, up):
        return gate / (1 + xp.exp(-gate)) * up

    def vjp(self, node, grads):
        gate, up = node.inputs
        s = tb.sigmoid(gate)
        silu = gate * s
        # d silu/d gate = σ + gate·σ·(1 − σ)
        return [grads[0] * up * (s + silu * (1 - s)), grads[0] * silu]

    def flops(self, in_shapes, out_shapes):
        return 4 * math.prod(out_shapes[0])  # exp, add, divide, multiply

    def label(self):
        return "SwiGLU"

    def examples(self, rng):
        return [([rng.standard_normal((2, 3, 8)), rng.standard_normal((2, 3, 8))], {}),
                ([rng.standard_normal((5,)), rng.standard_normal((5,))], {})]


@register_op
class RMSNorm(OpDef):
    """x / √(mean(x²) + eps) · gamma over the last axis: LayerNorm without centring or bias."""

    name = "rmsnorm"
    signature = "rmsnorm(x[..., D], gamma[D], eps=1e-6) -> like x"

    def infer(self, types, eps=1e-6):
        x, gamma = types
        if x.dtype not in FLOAT_DTYPES or gamma.dtype != x.dtype or x.rank < 1 \
                or gamma.shape != x.shape[-1:]:
            raise ShapeError(f"rmsnorm needs a float x[..., D] and gamma[D] of its dtype, "
                             f"got {x} and {gamma}")
        return x

    def params(self, x, eps=1e-6):  # build_model(norm_op="rmsnorm") creates these
        return [Param("gamma", x.shape[-1:], {"dist": "ones"})]

    def kernel(self, xp, x, gamma, eps=1e-6):
        return x / xp.sqrt(xp.mean(x * x, axis=-1, keepdims=True) + eps) * gamma

    def vjp(self, node, grads):
        x, gamma = node.inputs
        g = grads[0]
        r = tb.rsqrt(tb.mean(x * x, -1, keepdims=True) + node.attrs.get("eps", 1e-6))
        h = g * gamma
        # y = x·r·gamma with r = (mean(x²) + eps)^(-1/2), so dr/dx = −r³·x / D
        dx = r * (h - x * (r * r) * tb.mean(h * x, -1, keepdims=True))
        return [dx, unbroadcast(g * x * r, gamma)]  # gamma was broadcast over x's lead axes

    def flops(self, in_shapes, out_shapes, eps=1e-6):
        return 5 * math.prod(out_shapes[0])  # square, mean, scale by r, by gamma; rsqrt per row

    def label(self, eps=1e-6):
        return "RMSNorm"

    def examples(self, rng):
        return [([rng.standard_normal((2, 3, 8)), rng.standard_normal(8)], {"eps": 1e-6}),
                ([rng.standard_normal(6), rng.standard_normal(6)], {})]


def swiglu(gate, up):
    """Add a SwiGLU node: silu(gate) · up."""
    return tb.apply("swiglu", gate, up)


def rmsnorm(x, gamma, eps=1e-6):
    """Add an RMSNorm node over the last axis of x."""
    return tb.apply("rmsnorm", x, gamma, eps=eps)
