"""Transformer layers: sublayers wrapped in residual adds and LayerNorm, stacked.

``norm=post`` (the 2017 paper's text):  x = LN(x + sublayer(x))
``norm=pre``  (GPT-2, the figure as often read): x = x + sublayer(LN(x)), plus a final LN.

Every layer of a stack is built by the same code under ``layer_i``, so layers are
structurally identical (same ops, attrs and shapes; parameters differ only by name) and a
renderer can fold them into one box marked ×N.
"""

from __future__ import annotations

from collections.abc import Callable

from tgraph import builder as tb
from tgraph.ir import Value
from tgraph.models import roles
from tgraph.models.attention import attention
from tgraph.models.init import norm, weight, zeros

RESIDUAL = "residual"  # node.meta["role"] of residual adds, for renderers


def feed_forward(cfg, x: Value) -> Value:
    """W_2·act(W_1·x + b_1) + b_2, applied at every position."""
    g = x.graph
    h = tb.linear(x, weight(g, "w_1", (cfg.d_model, cfg.d_ff), cfg),
                  zeros(g, "b_1", (cfg.d_ff,), cfg))
    return tb.linear(roles.apply(cfg.activation, h), weight(g, "w_2", (cfg.d_ff, cfg.d_model), cfg),
                     zeros(g, "b_2", (cfg.d_model,), cfg))


def sublayer(cfg, x: Value, index: int, scope: str, fn: Callable[[Value], Value]) -> Value:
    """One residual block: the sublayer ``fn`` under ``scope``, its norm ``ln_<index>``
    placed by ``cfg.norm``, and the residual add (marked for renderers)."""
    g = x.graph
    ln = f"ln_{index}"
    inner = norm(cfg, x, ln) if cfg.norm == "pre" else x
    with g.scope(scope):
        y = fn(inner)
    out = x + y
    out.node.meta["role"] = RESIDUAL
    return norm(cfg, out, ln) if cfg.norm == "post" else out


def encoder_layer(cfg, x: Value, keep: Value | None = None, causal: bool = False) -> Value:
    """Self-attention then feed-forward (a GPT block when causal)."""
    x = sublayer(cfg, x, 1, "self_attn", lambda h: attention(cfg, h, keep=keep, causal=causal))
    return sublayer(cfg, x, 2, "ffn", lambda h: feed_forward(cfg, h))


def decoder_layer(cfg, x: Value, memory: Value) -> Value:
    """Causal self-attention, cross-attention to the encoder's output, feed-forward."""
    x = sublayer(cfg, x, 1, "self_attn", lambda h: attention(cfg, h, causal=True))
    x = sublayer(cfg, x, 2, "cross_attn", lambda h: attention(cfg, h, memory=memory))
    return sublayer(cfg, x, 3, "ffn", lambda h: feed_forward(cfg, h))


def stack(cfg, x: Value, n_layers: int, layer: Callable[[Value], Value]) -> Value:
    """n_layers copies of ``layer`` under layer_0 … layer_{n−1}; pre-norm ends with ln_f."""
    g = x.graph
    for i in range(n_layers):
        with g.scope(f"layer_{i}"):
            x = layer(x)
    return norm(cfg, x, "ln_f") if cfg.norm == "pre" else x
