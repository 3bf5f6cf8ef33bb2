"""Token embedding, additive positional encodings, unembedding and the loss."""

from __future__ import annotations

import numpy as np

from tgraph import builder as tb
from tgraph.ir import Graph, Value
from tgraph.models import positional
from tgraph.models.init import weight


def token_table(g: Graph, cfg) -> Value:
    """The [vocab, D] table; create it under the ``embed`` scope."""
    return weight(g, "token_table", (cfg.vocab, cfg.d_model), cfg)


def lookup(cfg, table: Value, tokens: Value) -> Value:
    """Row tokens[b, t] of the table: a gather, or one-hot × table (seed 000's teaching
    form: the same numbers, but the matmul shows that embedding is a linear map)."""
    if cfg.embed == "one_hot":
        return tb.one_hot(tokens, cfg.vocab, dtype=cfg.dtype) @ table
    return tb.gather(table, tokens)


def position_table(g: Graph, cfg, length: int) -> Value | None:
    """The learned [length, D] position table (pos=learned), else None."""
    return weight(g, "position_table", (length, cfg.d_model), cfg) if cfg.pos == "learned" else None


def add_positions(cfg, x: Value, table: Value | None) -> Value:
    """x [B, T, D] plus a sinusoidal or learned [T, D] encoding (rope/alibi: x unchanged,
    they act inside attention)."""
    if cfg.pos == "sinusoidal":
        return x + positional.sinusoidal(x)
    if cfg.pos == "learned":
        return x + positional.learned(x, table)
    return x


def embed_tokens(cfg, tokens: Value, table: Value, positions: Value | None,
                 scale: bool = False) -> Value:
    """Token lookup (×√D when ``scale``, as the 2017 paper does) plus positions."""
    x = lookup(cfg, table, tokens)
    if scale:
        x = tb.scale(x, float(np.sqrt(cfg.d_model)), name="sqrt_d_model")
    return add_positions(cfg, x, positions)


def unembed(cfg, x: Value, table: Value) -> Value:
    """Logits over the vocabulary: x·tableᵀ when tied, else x·W_out [D, vocab]."""
    if cfg.tie_embeddings:
        return x @ tb.transpose(table, (1, 0))
    return x @ weight(x.graph, "w_out", (cfg.d_model, cfg.vocab), cfg)


def finish(g: Graph, logits: Value, targets_shape, loss: bool) -> None:
    """Set ``logits`` and, with loss, add the int ``targets`` input and the scalar ``loss``."""
    g.set_output("logits", logits)
    if loss:
        targets = g.input("targets", targets_shape, "int64")
        with g.scope("loss"):
            g.set_output("loss", tb.cross_entropy(logits, targets))
