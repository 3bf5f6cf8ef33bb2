"""The encoder–decoder of "Attention Is All You Need" (2017).

src_tokens int[B, S] -> embed/src -> encoder/layer_i (self-attention, feed-forward)
tgt_tokens int[B, T] (the outputs shifted right) -> embed/tgt -> decoder/layer_i (causal
self-attention, cross-attention to the encoder output, feed-forward) -> head -> logits
[B, T, vocab]. As in the paper, source, target and output share one token table
(tie_embeddings) and embeddings are multiplied by √d_model.
"""

from __future__ import annotations

from dataclasses import dataclass

from tgraph.errors import TGraphError
from tgraph.ir import Graph
from tgraph.models.config import ModelSpec, TokenConfig, token_dims, token_ranges
from tgraph.models.embeddings import embed_tokens, finish, position_table, token_table, unembed
from tgraph.models.layers import decoder_layer, encoder_layer, stack


@dataclass(frozen=True)
class TransformerConfig(TokenConfig):
    n_enc_layers: int = 0  # 0 = n_layers
    n_dec_layers: int = 0  # 0 = n_layers
    pos: str = "sinusoidal"
    activation: str = "relu"
    tie_embeddings: bool = True

    @property
    def enc_layers(self) -> int:
        return self.n_enc_layers or self.n_layers

    @property
    def dec_layers(self) -> int:
        return self.n_dec_layers or self.n_layers

    def check(self) -> None:
        super().check()
        for key in ("n_enc_layers", "n_dec_layers"):
            if getattr(self, key) < 0:
                raise TGraphError(f"config: {key}={getattr(self, key)} must be 0 (= n_layers) "
                                  "or a positive integer")


def build(g: Graph, cfg: TransformerConfig, loss: bool) -> None:
    src = g.input("src_tokens", ("B", "S"), "int64")
    tgt = g.input("tgt_tokens", ("B", "T"), "int64")
    with g.scope("embed"):
        table = token_table(g, cfg)
        positions = position_table(g, cfg, cfg.max_len)
        with g.scope("src"):
            x = embed_tokens(cfg, src, table, positions, scale=True)
        with g.scope("tgt"):
            y = embed_tokens(cfg, tgt, table, positions, scale=True)
    with g.scope("encoder"):
        memory = stack(cfg, x, cfg.enc_layers, lambda h: encoder_layer(cfg, h))
    with g.scope("decoder"):
        y = stack(cfg, y, cfg.dec_layers, lambda h: decoder_layer(cfg, h, memory))
    with g.scope("head"):
        logits = unembed(cfg, y, table)
    finish(g, logits, ("B", "T"), loss)


SPEC = ModelSpec(
    name="transformer",
    config=TransformerConfig,
    build=build,
    doc='encoder-decoder of "Attention Is All You Need" (post-LN, sinusoidal, shared tables)',
    io="src_tokens int64[B,S], tgt_tokens int64[B,T] (outputs shifted right) -> logits "
       "[B,T,vocab]; --loss: + targets int64[B,T] -> loss",
    presets={
        "tiny": {},
        "base": {"n_layers": 6, "d_model": 512, "n_heads": 8, "d_ff": 2048, "vocab": 37000,
                 "max_len": 512},
    },
    dims=lambda cfg: token_dims(cfg, ("S", "T")),
    int_ranges=lambda cfg: token_ranges(cfg, ("src_tokens", "tgt_tokens")),
)
