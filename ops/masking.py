"""The mask op: fill attention scores where a mask says "do not look".

Causal and local-window masks are computed from the scores' own shape inside the
kernel, so no T×T constant exists in the graph to be shared (and drawn) across layers.
"""

from __future__ import annotations

import math

import numpy as np

from tgraph import builder as tb
from tgraph.errors import ShapeError
from tgraph.ops.elementwise import broadcast_types, need_float
from tgraph.ops.registry import OpDef, register_op
from tgraph.shapes import fmt_shape


def keep_pattern(xp, t: int, s: int, causal: bool, window: int):
    """bool[T, S], True where query i may look at key j (queries aligned to the last keys)."""
    i = xp.arange(t)[:, None] + (s - t)
    j = xp.arange(s)[None, :]
    keep = xp.ones((t, s), dtype=bool)
    if causal:
        keep &= j <= i
    if window:
        keep &= abs(j - i) <= window
    return keep


@register_op
class Mask(OpDef):
    """scores[..., T, S] with `fill` (default −inf) where masked: by an optional bool `keep`
    input (True = look, broadcast to the scores: padding masks), by `causal` (no looking
    ahead) and by `window` r > 0 (only keys within r positions)."""

    fresh_result = True

    name = "mask"
    attr_kinds = {"causal": "bool", "window": "nat", "fill": "fill"}
    signature = 'mask(scores[..., T, S], keep: bool?=None, causal=False, window=0, fill="-inf")'

    def infer(self, types, causal=False, window=0, fill="-inf"):
        x = need_float(types[0], self.name)
        float(fill)
        if x.rank < 2:
            raise ShapeError("mask needs scores of rank ≥ 2 ([..., T, S])")
        if len(types) > 2:
            raise ShapeError("mask takes the scores and at most one keep mask")
        if len(types) == 2:
            if types[1].dtype != "bool":
                raise ShapeError(f"mask keep input must be bool, got {types[1].dtype}")
            out = broadcast_types([types[1].with_dtype(x.dtype), x], self.name)
            if out.shape != x.shape:
                raise ShapeError("mask keep input must broadcast to the scores' shape")
        if not (causal or window or len(types) == 2):
            raise ShapeError("mask needs causal=True, window>0 or a keep input")
        return x

    def kernel(self, xp, x, keep=None, causal=False, window=0, fill="-inf"):
        if causal or window:
            pattern = keep_pattern(xp, x.shape[-2], x.shape[-1], causal, window)
            keep = pattern if keep is None else keep & pattern
        out = x.copy()  # cheaper than where(): no broadcast of keep in the inner loop
        xp.copyto(out, x.dtype.type(float(fill)), where=~keep)
        return out

    def jax_kernel(self, jnp, x, keep=None, causal=False, window=0, fill="-inf"):
        if causal or window:
            pattern = keep_pattern(jnp, x.shape[-2], x.shape[-1], causal, window)
            keep = pattern if keep is None else keep & pattern
        return jnp.where(keep, x, jnp.asarray(float(fill), x.dtype))

    def flops(self, in_shapes, out_shapes, **attrs):
        return math.prod(out_shapes[0])

    def vjp(self, node, grads):
        # masked scores were replaced by a constant: their gradient is zero
        keep = node.inputs[1:]
        return [tb.mask(grads[0], *keep, **{**node.attrs, "fill": "0"}), *[None] * len(keep)]

    def examples(self, rng):
        keep = rng.random((2, 1, 4)) > 0.3
        return [([rng.standard_normal((2, 4, 4))], {"causal": True}),
                ([rng.standard_normal((2, 3, 5))], {"causal": True, "window": 1, "fill": "-2"}),
                ([rng.standard_normal((2, 3, 4)), keep], {"fill": "-3"})]

    def label(self, causal=False, window=0, fill="-inf"):
        kinds = (["causal"] if causal else []) + ([f"window ±{window}"] if window else [])
        return f"Mask ({', '.join(kinds) or 'padding'})"


@register_op
class MaskedSoftmax(OpDef):
    """softmax(mask(scale · scores, causal, window), axis=-1) as one op: -O2's form of
    attention's 1/√d scale, mask and softmax (tgraph/passes/attention.py). One pass over a
    row, with no scaled or masked scores written in between; a row that keeps no key gives
    zeros."""

    fresh_result = True

    name = "masked_softmax"
    attr_kinds = {"causal": "bool", "window": "nat", "scale": "eps"}
    signature = "masked_softmax(scores[..., T, S], causal=False, window=0, scale=1.0) -> like scores"

    def infer(self, types, causal=False, window=0, scale=1.0):
        if len(types) != 1:
            raise ShapeError("masked_softmax takes the scores only (a keep mask stays a mask op)")
        return Mask.infer(self, types, causal=causal, window=window)

    def kernel(self, xp, x, causal=False, window=0, scale=1.0):
        from tgraph.ops.registry import get_op

        scaled = x * x.dtype.type(scale) if scale != 1.0 else x
        masked = Mask.kernel(self, xp, scaled, causal=causal, window=window)
        return get_op("softmax").kernel(xp, masked, axis=-1)

    def jax_kernel(self, jnp, x, causal=False, window=0, scale=1.0):
        from tgraph.ops.registry import get_op

        scaled = x * jnp.asarray(scale, x.dtype) if scale != 1.0 else x
        masked = Mask.jax_kernel(self, jnp, scaled, causal=causal, window=window)
        return get_op("softmax").jax_kernel(jnp, masked, axis=-1)

    def flops(self, in_shapes, out_shapes, **attrs):
        return 7 * math.prod(out_shapes[0])

    def vjp(self, node, grads):
        # softmax's gradient y·(g − Σ g·y) is already 0 where y is (the masked keys)
        g = tb.apply("softmax_grad", node.output, grads[0], axis=-1)
        scale = node.attrs.get("scale", 1.0)
        return [tb.scale(g, scale) if scale != 1.0 else g]

    def examples(self, rng):
        return [([rng.standard_normal((2, 4, 4))], {"causal": True}),
                ([rng.standard_normal((2, 3, 5))], {"causal": True, "window": 1, "scale": 0.5}),
                ([rng.standard_normal((3, 6))], {"window": 2, "scale": 3.0})]

    def label(self, causal=False, window=0, scale=1.0):
        kinds = Mask.label(self, causal, window)[6:-1]
        return f"Masked softmax ({kinds}{f', ×{scale:.3g}' if scale != 1.0 else ''})"


@register_op
class Attention(OpDef):
    """masked_softmax(q · kᵀ) · v as one op: -O2's form of a graph's attention
    (tgraph/passes/attention.py), where nothing else reads the scores. The NumPy backend
    computes it one (batch, head) at a time, the [T, S] weights staying in the core's cache
    (tgraph/codegen/attention.py); this kernel is the reference. With ``weights`` the
    weights are a second output too: a training graph keeps them for attention_grad, which
    then does not compute them again."""

    fresh_result = True

    name = "attention"
    attr_kinds = {"causal": "bool", "window": "nat", "scale": "eps", "weights": "bool"}
    signature = ("attention(q[..., T, D], k[..., S, D], v[..., S, E], causal=False, window=0, "
                 "scale=1.0, weights=False) -> [..., T, E] (and the weights [..., T, S])")

    def infer(self, types, causal=False, window=0, scale=1.0, weights=False):
        if len(types) != 3:
            raise ShapeError("attention takes q, k and v")
        q, k, v = (need_float(t, self.name) for t in types)
        broadcast_types([q.with_shape(()), k.with_shape(()), v.with_shape(())], self.name)
        if not q.rank == k.rank == v.rank >= 2 or not q.shape[:-2] == k.shape[:-2] == v.shape[:-2]:
            raise ShapeError(f"attention needs q, k, v of one rank ≥ 2 and one batch shape, got "
                             f"{fmt_shape(q.shape)}, {fmt_shape(k.shape)}, {fmt_shape(v.shape)}")
        if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
            raise ShapeError(f"attention: q [.., T, D], k [.., S, D], v [.., S, E] do not fit: "
                             f"{fmt_shape(q.shape)}, {fmt_shape(k.shape)}, {fmt_shape(v.shape)}")
        if not (causal or window):
            raise ShapeError("attention needs causal=True or window>0 (its softmax is masked)")
        out = q.with_shape((*q.shape[:-1], v.shape[-1]))
        return [out, q.with_shape((*q.shape[:-1], k.shape[-2]))] if weights else out

    def kernel(self, xp, q, k, v, causal=False, window=0, scale=1.0, weights=False):
        from tgraph.ops.registry import get_op

        scores = get_op("matmul").kernel(xp, q, xp.swapaxes(k, -1, -2))
        p = get_op("masked_softmax").kernel(xp, scores, causal=causal, window=window,
                                            scale=scale)
        out = get_op("matmul").kernel(xp, p, v)
        return (out, p) if weights else out

    def jax_kernel(self, jnp, q, k, v, causal=False, window=0, scale=1.0, weights=False):
        from tgraph.ops.registry import get_op

        p = get_op("masked_softmax").jax_kernel(
            jnp, q @ jnp.swapaxes(k, -1, -2), causal=causal, window=window, scale=scale)
        return (p @ v, p) if weights else p @ v

    def flops(self, in_shapes, out_shapes, **attrs):
        q, k, v = in_shapes
        pairs = math.prod(q[:-1]) * k[-2]
        return 2 * pairs * (q[-1] + v[-1]) + 7 * pairs

    def vjp(self, node, grads):
        """One attention_grad op, given the weights when the forward kept them (else it
        computes them again from q and k). A cotangent on the weights themselves (something
        else read them, or a second derivative) goes through the closed form."""
        attrs = _attention_attrs(node)
        if len(grads) > 1 and grads[1] is not None:
            from tgraph.autodiff import vjp_of_expansion

            return vjp_of_expansion(node, grads, lambda *xs: attention_closed_form(*xs, **attrs))
        return list(tb.apply("attention_grad", *node.inputs, grads[0], *node.outputs[1:],
                             **attrs))

    def examples(self, rng):
        def qkv(lead, t, s, d, e):
            return [rng.standard_normal((*lead, t, d)), rng.standard_normal((*lead, s, d)),
                    rng.standard_normal((*lead, s, e))]

        return [(qkv((2,), 4, 4, 3, 2), {"causal": True, "scale": 0.5}),
                (qkv((2, 2), 3, 5, 2, 3), {"causal": True, "window": 1}),
                (qkv((), 6, 6, 4, 4), {"window": 2, "scale": 2.0}),
                (qkv((2,), 5, 5, 3, 2), {"causal": True, "scale": 0.5, "weights": True})]

    def label(self, causal=False, window=0, scale=1.0, weights=False):
        kinds = Mask.label(self, causal, window)[6:-1]
        return f"Attention ({kinds}{f', ×{scale:.3g}' if scale != 1.0 else ''})"


def _attention_attrs(node) -> dict:
    """An attention or attention_grad node's mask and scale attrs, as set."""
    return {a: node.attrs[a] for a in ("causal", "window", "scale") if a in node.attrs}


def _weights(q, k, causal, window, scale):
    """masked_softmax(q·kᵀ) as graph ops."""
    from tgraph.ops.linalg import swap_last

    return tb.apply("masked_softmax", tb.matmul(q, swap_last(k)), causal=causal,
                    window=window, scale=scale)


def attention_closed_form(q, k, v, causal=False, window=0, scale=1.0):
    """attention(q, k, v, weights=True) as graph ops: [P·v, P]."""
    weights = _weights(q, k, causal, window, scale)
    return [tb.matmul(weights, v), weights]


def attention_grad_closed_form(q, k, v, g, *kept, causal=False, window=0, scale=1.0):
    """(dq, dk, dv) of attention(q, k, v) for the output cotangent g, as graph ops: P the
    weights (``kept``, or computed again from q and k), dS = scale · softmax_grad(P, g·vᵀ);
    dq = dS·k, dk = dSᵀ·q, dv = Pᵀ·g."""
    from tgraph.ops.linalg import swap_last

    weights = kept[0] if kept else _weights(q, k, causal, window, scale)
    d_scores = tb.apply("softmax_grad", weights, tb.matmul(g, swap_last(v)))
    if scale != 1.0:
        d_scores = tb.scale(d_scores, scale)
    return [tb.matmul(d_scores, k), tb.matmul(swap_last(d_scores), q),
            tb.matmul(swap_last(weights), g)]


@register_op
class AttentionGrad(OpDef):
    """attention's gradient (dq, dk, dv) for its output's cotangent g, as one op. Given the
    weights p that the forward kept (attention with ``weights``) it reads them; without,
    it computes them again from q and k (flash attention's backward), so the graph keeps no
    [.., T, S] tensor between its forward and backward. The NumPy backend computes it one
    (batch, head) at a time with the scores in the core's cache (tgraph/codegen/attention.py);
    this kernel is the reference."""

    fresh_result = True

    name = "attention_grad"
    attr_kinds = Attention.attr_kinds
    signature = ("attention_grad(q[..., T, D], k[..., S, D], v[..., S, E], g[..., T, E], "
                 "[p[..., T, S]], causal=False, window=0, scale=1.0) -> (dq, dk, dv)")

    def infer(self, types, causal=False, window=0, scale=1.0):
        if len(types) not in (4, 5):
            raise ShapeError("attention_grad takes q, k, v, the output's gradient g and, "
                             "when the forward kept them, the weights p")
        out, weights = Attention.infer(self, types[:3], causal=causal, window=window,
                                       scale=scale, weights=True)
        if types[3] != out:
            raise ShapeError(f"attention_grad needs g like attention's output {out}, got "
                             f"{types[3]}")
        if types[4:] and types[4] != weights:
            raise ShapeError(f"attention_grad needs p like attention's weights {weights}, got "
                             f"{types[4]}")
        return list(types[:3])

    def kernel(self, xp, q, k, v, g, *kept, causal=False, window=0, scale=1.0):
        from tgraph.ops.registry import get_op

        matmul = get_op("matmul").kernel
        weights = kept[0] if kept else get_op("masked_softmax").kernel(
            xp, matmul(xp, q, xp.swapaxes(k, -1, -2)), causal=causal, window=window,
            scale=scale)
        d_scores = get_op("softmax_grad").kernel(xp, weights, matmul(xp, g, xp.swapaxes(v, -1, -2)))
        d_scores = d_scores * xp.asarray(scale, dtype=d_scores.dtype)
        return (matmul(xp, d_scores, k), matmul(xp, xp.swapaxes(d_scores, -1, -2), q),
                matmul(xp, xp.swapaxes(weights, -1, -2), g))

    def jax_kernel(self, jnp, q, k, v, g, *kept, causal=False, window=0, scale=1.0):
        from tgraph.ops.registry import get_op

        weights = kept[0] if kept else get_op("masked_softmax").jax_kernel(
            jnp, q @ jnp.swapaxes(k, -1, -2), causal=causal, window=window, scale=scale)
        d_weights = g @ jnp.swapaxes(v, -1, -2)
        d_scores = weights * (d_weights - (weights * d_weights).sum(-1, keepdims=True)) * scale
        return (d_scores @ k, jnp.swapaxes(d_scores, -1, -2) @ q,
                jnp.swapaxes(weights, -1, -2) @ g)

    def flops(self, in_shapes, out_shapes, **attrs):
        q, k, v = in_shapes[:3]
        pairs = math.prod(q[:-1]) * k[-2]
        if len(in_shapes) == 5:  # the weights given: no q·kᵀ, no softmax
            return 2 * pairs * (2 * q[-1] + 2 * v[-1]) + 5 * pairs
        return 2 * pairs * (3 * q[-1] + 2 * v[-1]) + 12 * pairs

    def vjp(self, node, grads):
        """The closed form re-emitted as graph ops and differentiated (second derivatives)."""
        from tgraph.autodiff import vjp_of_expansion

        attrs = _attention_attrs(node)
        return vjp_of_expansion(node, grads, lambda *xs: attention_grad_closed_form(*xs, **attrs))

    def examples(self, rng):
        """The weights, where given, are those of q and k (what the forward kept)."""
        cases = []
        for arrays, attrs in Attention.examples(self, rng):
            kept = attrs.pop("weights", False)
            g = rng.standard_normal((*arrays[0].shape[:-1], arrays[2].shape[-1]))
            p = Attention.kernel(self, np, *arrays, weights=True, **attrs)[1]
            cases.append((arrays + [g] + ([p] if kept else []), attrs))
        return cases

    def label(self, causal=False, window=0, scale=1.0):
        return Attention.label(self, causal, window, scale).replace("Attention", "Attention′", 1)
