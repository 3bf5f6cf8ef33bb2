"""BERT-style encoder: bidirectional self-attention with a padding mask.

tokens int[B, T], attention_mask bool[B, T] (true = real token) -> embed (tokens +
positions, LayerNorm) -> encoder/layer_i -> head -> logits [B, T, vocab] (masked-LM head)
"""

from __future__ import annotations

from dataclasses import dataclass

from tgraph.ir import Graph
from tgraph.models.config import ModelSpec, TokenConfig, token_dims, token_ranges
from tgraph.models.embeddings import embed_tokens, finish, position_table, token_table, unembed
from tgraph.models.init import norm
from tgraph.models.layers import encoder_layer, stack


@dataclass(frozen=True)
class BERTConfig(TokenConfig):
    tie_embeddings: bool = True


def build(g: Graph, cfg: BERTConfig, loss: bool) -> None:
    tokens = g.input("tokens", ("B", "T"), "int64")
    keep = g.input("attention_mask", ("B", "T"), "bool")
    with g.scope("embed"):
        table = token_table(g, cfg)
        x = embed_tokens(cfg, tokens, table, position_table(g, cfg, cfg.max_len))
        x = norm(cfg, x, "ln")
    with g.scope("encoder"):
        x = stack(cfg, x, cfg.n_layers, lambda h: encoder_layer(cfg, h, keep=keep))
    with g.scope("head"):
        logits = unembed(cfg, x, table)
    finish(g, logits, ("B", "T"), loss)


SPEC = ModelSpec(
    name="bert",
    config=BERTConfig,
    build=build,
    doc="encoder-only bidirectional model with a padding mask (BERT layout, MLM head)",
    io="tokens int64[B,T], attention_mask bool[B,T] (true = real token) -> logits "
       "[B,T,vocab]; --loss: + targets int64[B,T] -> loss",
    presets={
        "tiny": {},
        "base": {"n_layers": 12, "d_model": 768, "n_heads": 12, "d_ff": 3072,
                 "vocab": 30522, "max_len": 512},
    },
    dims=token_dims,
    int_ranges=token_ranges,
)
