"""Positional encodings computed from shapes: a ``positions`` op reads the sequence
length off the activations, so no T×T or max_len table is shared between layers.

- sinusoidal: PE[t, 2i] = sin(t·ω_i), PE[t, 2i+1] = cos(t·ω_i), ω_i = 10000^(−2i/D)
- learned: rows 0..T−1 of a [max_len, D] table, picked by a gather
- rope: rotate (q, k) pairs by t·ω_i (the "rotate half" layout of GPT-NeoX / LLaMA)
- alibi: scores −= m_h·|i − j|, slopes m_h = 2^(−8(h+1)/H) (Press et al.)
"""

from __future__ import annotations

import numpy as np

from tgraph import builder as tb
from tgraph.ir import Value


def frequencies(x: Value, width: int) -> Value:
    """ω_i = 10000^(−2i/width) for i < width/2, as a constant of x's dtype."""
    omega = 10000.0 ** (-np.arange(width // 2) * 2.0 / width)
    return x.graph.const(omega, name="inv_freq", dtype=x.dtype)


def angles(x: Value, width: int, axis: int) -> Value:
    """[T, width/2] angles t·ω_i for the positions along x's ``axis``."""
    pos = tb.positions(x, axis, dtype=x.dtype)
    return tb.reshape(pos, (pos.shape[0], 1)) * frequencies(x, width)


def sinusoidal(x: Value, axis: int = 1) -> Value:
    """[T, D] table of the 2017 paper, sin and cos interleaved, for x [B, T, D]; in scope
    ``positions`` (diagrams draw it as one box unless asked to expand it)."""
    d = x.shape[-1]
    with x.graph.scope("positions"):
        ang = angles(x, d, axis)
        t, half = ang.shape
        pair = tb.concat(tb.reshape(tb.sin(ang), (t, half, 1)),
                         tb.reshape(tb.cos(ang), (t, half, 1)), axis=-1)
        return tb.reshape(pair, (t, d))


def learned(x: Value, table: Value, axis: int = 1) -> Value:
    """[T, D]: the first T rows of a learned [max_len, D] table."""
    return tb.gather(table, tb.positions(x, axis, dtype="int64"))


def rope_tables(x: Value, d_head: int) -> tuple[Value, Value]:
    """cos and sin [T, d_head] for x [B, T, D]; computed once per attention block."""
    ang = angles(x, d_head, 1)
    both = tb.concat(ang, ang, axis=-1)
    return tb.cos(both), tb.sin(both)


def rope(x: Value, cos: Value, sin: Value) -> Value:
    """x·cos + rotate_half(x)·sin for x [..., T, d_head]."""
    half = x.shape[-1] // 2
    x1, x2 = tb.split(x, [half, half], axis=-1)
    return x * cos + tb.concat(-x2, x1, axis=-1) * sin


def alibi_slopes(n_heads: int) -> np.ndarray:
    return 2.0 ** (-8.0 * np.arange(1, n_heads + 1) / n_heads)


def alibi_distance(q: Value, k: Value) -> Value:
    """[T, S] distances |i − j| between query and key positions (rows of q, k [B, T, D])."""
    pq = tb.positions(q, 1, dtype=q.dtype)
    pk = tb.positions(k, 1, dtype=q.dtype)
    return tb.abs(tb.reshape(pq, (pq.shape[0], 1)) - tb.reshape(pk, (1, pk.shape[0])))
