"""Vision Transformer: images cut into patches, a class token, an encoder, a classifier.

images float[B, C, H, W] -> embed (patches by reshape/transpose, × W_patch: the same
numbers as a stride-p convolution; class token; positions) -> encoder/layer_i -> head
(the class token's row) -> logits [B, n_classes]
"""

from __future__ import annotations

from dataclasses import dataclass

from tgraph import builder as tb
from tgraph.errors import TGraphError
from tgraph.ir import Graph, Value
from tgraph.models.config import AttentionConfig, ModelSpec
from tgraph.models.embeddings import add_positions, finish, position_table
from tgraph.models.init import weight, zeros
from tgraph.models.layers import encoder_layer, stack


@dataclass(frozen=True)
class ViTConfig(AttentionConfig):
    norm: str = "pre"
    image_size: int = 16
    patch_size: int = 4
    channels: int = 3
    n_classes: int = 10

    @property
    def n_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def check(self) -> None:
        super().check()
        for key in ("image_size", "patch_size", "channels", "n_classes"):
            if getattr(self, key) < 1:
                raise TGraphError(f"config: {key}={getattr(self, key)} must be a positive integer")
        if self.image_size % self.patch_size:
            raise TGraphError(f"config: image_size={self.image_size} must be divisible by "
                              f"patch_size={self.patch_size}")


def patches(cfg: ViTConfig, images: Value) -> Value:
    """[B, C, H, W] -> [B, N, C·p·p]: each row one p×p patch, channels first."""
    b, c = images.shape[:2]
    p, n = cfg.patch_size, cfg.image_size // cfg.patch_size
    x = tb.reshape(images, (b, c, n, p, n, p))
    x = tb.transpose(x, (0, 2, 4, 1, 3, 5))  # [B, n, n, C, p, p]
    return tb.reshape(x, (b, n * n, c * p * p))


def build(g: Graph, cfg: ViTConfig, loss: bool) -> None:
    images = g.input("images", ("B", cfg.channels, cfg.image_size, cfg.image_size), cfg.dtype)
    d, width = cfg.d_model, cfg.channels * cfg.patch_size ** 2
    with g.scope("embed"):
        x = tb.linear(patches(cfg, images), weight(g, "w_patch", (width, d), cfg),
                      zeros(g, "b_patch", (d,), cfg))
        cls = tb.broadcast_to(weight(g, "class_token", (1, 1, d), cfg), (x.shape[0], 1, d))
        x = tb.concat(cls, x, axis=1)
        x = add_positions(cfg, x, position_table(g, cfg, cfg.n_patches + 1))
    with g.scope("encoder"):
        x = stack(cfg, x, cfg.n_layers, lambda h: encoder_layer(cfg, h))
    with g.scope("head"):
        first = tb.reshape(tb.slice(x, 1, 0, 1), (x.shape[0], d))
        logits = tb.linear(first, weight(g, "w_out", (d, cfg.n_classes), cfg),
                           zeros(g, "b_out", (cfg.n_classes,), cfg))
    finish(g, logits, ("B",), loss)


SPEC = ModelSpec(
    name="vit",
    config=ViTConfig,
    build=build,
    doc="Vision Transformer: patch embedding, class token, pre-LN encoder, classifier",
    io="images float[B,C,H,W] -> logits [B,n_classes]; --loss: + targets int64[B] -> loss",
    presets={
        "tiny": {},
        "base": {"n_layers": 12, "d_model": 768, "n_heads": 12, "d_ff": 3072,
                 "image_size": 224, "patch_size": 16, "n_classes": 1000},
    },
    dims=lambda cfg: {"B": 1},
    int_ranges=lambda cfg: {"targets": cfg.n_classes},
)
