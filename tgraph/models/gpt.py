"""GPT: a decoder-only, causal Transformer (GPT-2 layout with ``norm=pre``).

tokens int[B, T] -> embed -> decoder/layer_i (causal self-attention, feed-forward)
-> head -> logits [B, T, vocab]
"""

from __future__ import annotations

from dataclasses import dataclass

from tgraph.ir import Graph
from tgraph.models.config import ModelSpec, TokenConfig, token_dims, token_ranges
from tgraph.models.embeddings import embed_tokens, finish, position_table, token_table, unembed
from tgraph.models.layers import encoder_layer, stack


@dataclass(frozen=True)
class GPTConfig(TokenConfig):
    norm: str = "pre"
    tie_embeddings: bool = True


def build(g: Graph, cfg: GPTConfig, loss: bool) -> None:
    tokens = g.input("tokens", ("B", "T"), "int64")
    with g.scope("embed"):
        table = token_table(g, cfg)
        x = embed_tokens(cfg, tokens, table, position_table(g, cfg, cfg.max_len))
    with g.scope("decoder"):
        x = stack(cfg, x, cfg.n_layers, lambda h: encoder_layer(cfg, h, causal=True))
    with g.scope("head"):
        logits = unembed(cfg, x, table)
    finish(g, logits, ("B", "T"), loss)


SPEC = ModelSpec(
    name="gpt",
    config=GPTConfig,
    build=build,
    doc="decoder-only causal language model (GPT-2 layout)",
    io="tokens int64[B,T] -> logits [B,T,vocab]; --loss: + targets int64[B,T] -> loss",
    presets={
        "tiny": {},
        "gpt2-small": {"n_layers": 12, "d_model": 768, "n_heads": 12, "d_ff": 3072,
                       "vocab": 50257, "max_len": 1024, "activation": "gelu_tanh"},
    },
    dims=token_dims,
    int_ranges=token_ranges,
)
