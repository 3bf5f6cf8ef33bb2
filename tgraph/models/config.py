"""Model configs: dataclasses whose fields are the ``--set key=value`` keys.

Values may come as strings from the command line; ``make_config`` parses each by its
field's type and checks choices, so ``--set n_layers=2 tie_embeddings=true`` and
``build_model("gpt", n_layers=2, tie_embeddings=True)`` give the same config.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from tgraph.errors import TGraphError
from tgraph.models import roles
from tgraph.sanitize import clip

LAYER_LIMIT = 1000  # layers: building more would take minutes and nobody means it
INT_LIMIT = (1 << 31) - 1  # any other size: memory is checked when weights are made
_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


@dataclass(frozen=True)
class AttentionConfig:
    """Keys every model shares: the layer stack and the attention/positional options."""

    n_layers: int = 2
    d_model: int = 64
    n_heads: int = 4
    d_ff: int = 256
    norm: str = "post"
    pos: str = "learned"
    heads: str = "split"
    activation: str = "gelu"
    norm_op: str = "layernorm"
    value_rank: int = 0
    score: str = "dot"
    window: int = 0
    eps: float = 1e-5
    dtype: str = "float32"

    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {
        "norm": ("post", "pre"),
        "pos": ("sinusoidal", "learned", "rope", "alibi"),
        "heads": ("split", "batched"),
        "score": ("dot", "additive"),
        "embed": ("gather", "one_hot"),
        "dtype": ("float32", "float64"),
    }
    #: one line per key for ``tgraph models``
    HELP: ClassVar[dict[str, str]] = {
        "n_layers": "layers in the stack",
        "n_enc_layers": "encoder layers (0 = n_layers)",
        "n_dec_layers": "decoder layers (0 = n_layers)",
        "d_model": "width of the residual stream",
        "n_heads": "attention heads (d_model must divide by it)",
        "d_ff": "hidden width of the feed-forward block",
        "vocab": "token vocabulary size",
        "max_len": "longest sequence (learned position table size)",
        "norm": "LayerNorm after the residual add (post, 2017 text) or before the sublayer (pre)",
        "pos": "positional encoding",
        "heads": "each head its own Q/K/V path (split) or one projection + batched matmul",
        "activation": "feed-forward nonlinearity, by op name, a plugin's too: any op mapping "
                      "x to its own type (relu, gelu = exact erf form, gelu_tanh, sigmoid)",
        "norm_op": "the op of every norm: layernorm or a plugin's (e.g. an RMSNorm), with "
                   "the parameters it declares",
        "value_rank": "0 = full value map per head; r > 0 = value-down D×r then value-up r×d_head",
        "score": "scaled dot product or additive (Bahdanau) scores",
        "window": "0 = attend everywhere allowed; r > 0 = only keys within r positions",
        "tie_embeddings": "unembedding reuses the token table (transposed)",
        "embed": "token embedding as a gather or as one-hot × table (same numbers)",
        "eps": "norm epsilon (for a norm_op whose shape rule takes eps)",
        "dtype": "parameter and activation dtype",
        "image_size": "image height and width (pixels)",
        "patch_size": "patch height and width (pixels)",
        "channels": "image channels",
        "n_classes": "classes of the classifier head",
    }

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    def check(self) -> None:
        """Cross-field rules, each failing with a message that names the key."""
        for key in ("n_layers", "d_model", "n_heads", "d_ff"):
            if getattr(self, key) < 1:
                _bad(key, getattr(self, key), "a positive integer")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            limit = LAYER_LIMIT if f.name.startswith("n_") and "layers" in f.name else INT_LIMIT
            if isinstance(value, int) and not isinstance(value, bool) and value > limit:
                _bad(f.name, value, f"at most {limit:,}")
        if not (math.isfinite(self.eps) and 0 < self.eps < 1):
            _bad("eps", self.eps, "a number between 0 and 1")
        if self.d_model % self.n_heads:
            raise TGraphError(f"config: d_model={self.d_model} must be divisible by "
                              f"n_heads={self.n_heads}")
        if self.pos == "rope" and self.d_head % 2:
            raise TGraphError(f"config: pos=rope needs an even head width, got "
                              f"d_model/n_heads={self.d_head}")
        if self.pos == "sinusoidal" and self.d_model % 2:
            raise TGraphError(f"config: pos=sinusoidal needs an even d_model, got {self.d_model}")
        for key in ("value_rank", "window"):
            if getattr(self, key) < 0:
                _bad(key, getattr(self, key), "0 or a positive integer")
        for key in roles.ROLES:
            roles.check(key, getattr(self, key), self.dtype)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TokenConfig(AttentionConfig):
    """Keys of the models that read tokens (gpt, bert, transformer)."""

    vocab: int = 256
    max_len: int = 64
    tie_embeddings: bool = False
    embed: str = "gather"

    def check(self) -> None:
        super().check()
        for key in ("vocab", "max_len"):
            if getattr(self, key) < 1:
                _bad(key, getattr(self, key), "a positive integer")


def token_dims(cfg, axes=("T",)) -> dict[str, int]:
    """Default sizes of B and the sequence axes: 1 and min(max_len, 128)."""
    return {"B": 1, **{a: min(cfg.max_len, 128) for a in axes}}


def token_ranges(cfg, inputs=("tokens",)) -> dict[str, int]:
    """Every token input and the targets range over the vocabulary."""
    return {name: cfg.vocab for name in (*inputs, "targets")}


def _bad(key, value, what):
    raise TGraphError(f"config: {key}={clip(repr(value))[1:-1]} must be {what}")


def parse_value(cls: type, key: str, value: Any) -> Any:
    """One override, parsed by the field's type (strings from the CLI) and checked."""
    types = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    if key not in names:
        raise TGraphError(f"unknown config key {clip(key)}; valid keys: {', '.join(names)}")
    kind = types[key]
    try:
        if kind is bool:
            value = _parse_bool(value)
        elif isinstance(value, str) and kind in (int, float):
            value = kind(value)
        elif kind is int and not (isinstance(value, int) and not isinstance(value, bool)):
            raise ValueError
        elif kind is float:
            value = float(value)
    except ValueError:
        raise TGraphError(f"config key {clip(key)} needs a {kind.__name__}, got "
                          f"{clip(value)}") from None
    choices = cls.CHOICES.get(key)
    if choices and value not in choices:
        raise TGraphError(f"config key {clip(key)} must be one of {'|'.join(choices)}, got "
                          f"{clip(value)}")
    return value


def _parse_bool(value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError


@dataclass(frozen=True)
class ModelSpec:
    """One entry of the model zoo: its config class, presets, builder and documentation."""

    name: str
    config: type
    build: Callable[..., Any]  # build(graph, cfg, loss) -> None, fills the graph
    doc: str
    io: str
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: symbolic dims the graph's inputs use, with default sizes: cfg -> {"B": 1, "T": ...}
    dims: Callable[[Any], dict[str, int]] = lambda cfg: {"B": 1}
    #: integer inputs' exclusive upper bounds: cfg -> {"tokens": vocab, ...}
    int_ranges: Callable[[Any], dict[str, int]] = lambda cfg: {}

    def options(self) -> list[dict[str, Any]]:
        """Every config key with its type, default, choices and meaning (``tgraph models``)."""
        types = typing.get_type_hints(self.config)
        return [{"key": f.name, "default": f.default,
                 "type": "op" if f.name in roles.ROLES else types[f.name].__name__,
                 "choices": list(self.config.CHOICES.get(f.name, ())),
                 "help": self.config.HELP.get(f.name, "")}
                for f in dataclasses.fields(self.config)]

    def make_config(self, preset: str | None = None, **overrides):
        if preset is not None and preset not in self.presets:
            raise TGraphError(f"model {self.name!r} has no preset {preset!r}; presets: "
                              f"{', '.join(self.presets)}")
        values = dict(self.presets.get(preset, {}) if preset else {})
        values.update({k: parse_value(self.config, k, v) for k, v in overrides.items()})
        cfg = self.config(**values)
        cfg.check()
        return cfg
