"""Multi-head attention from primitives: QKᵀ, scale by 1/√d_k, mask, softmax, ×V.

Two layouts of the same maths (``heads=split|batched``):

- split: each head ``head_i`` has its own Q/K/V projection [D, d_head] and its own
  score/softmax/×V path, so a diagram shows heads one by one; their outputs are
  concatenated and projected by ``w_o``.
- batched: one projection [D, D] each for Q, K, V, a reshape/transpose to [B, H, T, d_head]
  and one batched matmul for all heads.

Head h of the split layout is columns h·d_head … (h+1)·d_head of the batched weights
(see ``tgraph.models.layout``), so both give the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tgraph import builder as tb
from tgraph.ir import Value
from tgraph.models import positional
from tgraph.models.init import weight, zeros


@dataclass
class Context:
    """What every head of one attention block shares: masks and position tables."""

    keep: Value | None  # bool, broadcastable to [B, T, S] (split) after reshape
    causal: bool
    window: int
    rope: tuple[Value, Value] | None = None  # cos, sin [T, d_head]
    distance: Value | None = None  # ALiBi |i − j| [T, S]


def attention(cfg, x: Value, memory: Value | None = None, keep: Value | None = None,
              causal: bool = False) -> Value:
    """Self-attention over x [B, T, D] (memory None) or cross-attention to memory [B, S, D].

    ``keep`` is a bool [B, S] padding mask (True = real token). Windows, RoPE and ALiBi
    apply to self-attention only: cross-attention relates positions of different sequences.
    """
    kv = x if memory is None else memory
    ctx = Context(keep=keep, causal=causal, window=cfg.window if memory is None else 0)
    if memory is None and cfg.pos == "rope":
        ctx.rope = positional.rope_tables(x, cfg.d_head)
    if memory is None and cfg.pos == "alibi":
        ctx.distance = positional.alibi_distance(x, kv)
    heads = split_heads if cfg.heads == "split" else batched_heads
    out = heads(cfg, x, kv, ctx)
    return tb.linear(out, weight(x.graph, "w_o", (cfg.d_model, cfg.d_model), cfg),
                     zeros(x.graph, "b_o", (cfg.d_model,), cfg))


def split_heads(cfg, x: Value, kv: Value, ctx: Context) -> Value:
    keep = padding_keep(ctx.keep, 1)  # [B, 1, S]
    outs = []
    for h in range(cfg.n_heads):
        with x.graph.scope(f"head_{h}"):
            q, k = project(cfg, x, "q", cfg.d_head), project(cfg, kv, "k", cfg.d_head)
            slope = None if ctx.distance is None else positional.alibi_slopes(cfg.n_heads)[h]
            outs.append(attend(cfg, q, k, values(cfg, kv, ()), ctx, keep, (), slope))
    return outs[0] if len(outs) == 1 else tb.concat(*outs, axis=-1)


def batched_heads(cfg, x: Value, kv: Value, ctx: Context) -> Value:
    lead = (cfg.n_heads,)
    keep = padding_keep(ctx.keep, 2)  # [B, 1, 1, S]
    q = to_heads(cfg, project(cfg, x, "q", cfg.d_model))
    k = to_heads(cfg, project(cfg, kv, "k", cfg.d_model))
    slopes = None
    if ctx.distance is not None:
        slopes = positional.alibi_slopes(cfg.n_heads).reshape(cfg.n_heads, 1, 1)
    out = attend(cfg, q, k, values(cfg, kv, lead), ctx, keep, lead, slopes)  # [B, H, T, dh]
    out = tb.transpose(out, (0, 2, 1, 3))
    return tb.reshape(out, (*out.shape[:2], cfg.d_model))


def project(cfg, x: Value, name: str, width: int) -> Value:
    """x·W_name + b_name, W [D, width]: one head's Q, K or V (width d_head) or all heads'."""
    g = x.graph
    return tb.linear(x, weight(g, f"w_{name}", (cfg.d_model, width), cfg),
                     zeros(g, f"b_{name}", (width,), cfg))


def to_heads(cfg, x: Value) -> Value:
    """[B, T, H·w] -> [B, H, T, w]."""
    b, t, width = x.shape
    return tb.transpose(tb.reshape(x, (b, t, cfg.n_heads, width // cfg.n_heads)), (0, 2, 1, 3))


def values(cfg, kv: Value, lead: tuple) -> Value:
    """V for one head (lead ()) or all heads (lead (H,)): full, or low rank
    value-down [D, r] then value-up [r, d_head] per head (no bias)."""
    heads = lead[0] if lead else 1
    if not cfg.value_rank:
        v = project(cfg, kv, "v", cfg.d_head * heads)
        return to_heads(cfg, v) if lead else v
    r = cfg.value_rank
    down = kv @ weight(kv.graph, "w_v_down", (cfg.d_model, r * heads), cfg)
    if lead:  # [B, S, H·r] -> [B, H, S, r], then one batched matmul with [H, r, d_head]
        down = to_heads(cfg, down)
    return down @ weight(kv.graph, "w_v_up", (*lead, r, cfg.d_head), cfg)


def attend(cfg, q: Value, k: Value, v: Value, ctx: Context, keep: Value | None,
           lead: tuple, slope) -> Value:
    """softmax(mask(scores(q, k)))·v for q [..., T, d], k and v [..., S, d]."""
    g = q.graph
    if ctx.rope is not None:
        q, k = (positional.rope(t, *ctx.rope) for t in (q, k))
    with g.scope("scores"):
        s = (additive_scores if cfg.score == "additive" else dot_scores)(cfg, q, k, lead)
        if slope is not None:
            s = s - ctx.distance * g.const(slope, name="alibi_slope", dtype=q.dtype)
        if keep is not None or ctx.causal or ctx.window:
            s = tb.mask(s, keep, causal=ctx.causal, window=ctx.window)
    return tb.softmax(s, axis=-1) @ v


def dot_scores(cfg, q: Value, k: Value, lead: tuple) -> Value:
    rank = len(k.shape)
    kt = tb.transpose(k, (*range(rank - 2), rank - 1, rank - 2))
    return tb.scale(q @ kt, 1.0 / np.sqrt(cfg.d_head), name="inv_sqrt_dk")


def additive_scores(cfg, q: Value, k: Value, lead: tuple) -> Value:
    """vᵀ tanh(q·W_q + k·W_k) for every (query, key) pair, width d_head (Bahdanau)."""
    g = q.graph
    d = cfg.d_head
    qa = _insert_axes(q @ weight(g, "w_q", (*lead, d, d), cfg), -2)  # [..., T, 1, d]
    ka = _insert_axes(k @ weight(g, "w_k", (*lead, d, d), cfg), -3)  # [..., 1, S, d]
    e = tb.tanh(qa + ka)  # [..., T, S, d]
    # [d, 1] per head; batched [H, 1, d, 1] so H lines up with e's batch axes [B, H, T]
    s = e @ weight(g, "v", (*lead, *((1,) if lead else ()), d, 1), cfg)
    return tb.reshape(s, s.shape[:-1])


def padding_keep(keep: Value | None, n_axes: int) -> Value | None:
    """bool [B, S] -> [B, 1, …, 1, S] with n_axes size-1 axes (broadcasts over T and heads)."""
    if keep is None:
        return None
    b, s = keep.shape
    return tb.reshape(keep, (b, *(1,) * n_axes, s))


def _insert_axes(x: Value, axis: int) -> Value:
    """Insert a size-1 axis before ``axis`` (negative counts from the end, like unsqueeze)."""
    shape = list(x.shape)
    pos = axis if axis >= 0 else len(shape) + axis + 1
    return tb.reshape(x, (*shape[:pos], 1, *shape[pos:]))
