"""The model zoo: Transformers written as explicit graphs of primitive ops.

    from tgraph.models import MODELS, build_model
    g = build_model("gpt", preset="tiny", loss=True, n_layers=2, heads="batched")

``MODELS`` maps a name to its ``ModelSpec`` (config dataclass, presets, docs);
``build_model`` parses overrides (strings from ``--set key=value`` too) by the config's
field types and returns a validated Graph whose ``meta`` records the model, its config,
default dims for its symbolic shapes and the ranges of its integer inputs.
"""

from __future__ import annotations

from tgraph.errors import TGraphError
from tgraph.ir import Graph
from tgraph.models import bert, gpt, transformer, vit
from tgraph.models.config import ModelSpec

MODELS: dict[str, ModelSpec] = {spec.name: spec
                               for spec in (transformer.SPEC, gpt.SPEC, bert.SPEC, vit.SPEC)}


def get_spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise TGraphError(f"unknown model {name!r}; models: {', '.join(MODELS)}")
    return MODELS[name]


def build_model(name: str, preset: str | None = None, loss: bool = False, **overrides) -> Graph:
    """Build model ``name`` from a preset (default: the config's defaults) and overrides."""
    spec = get_spec(name)
    cfg = spec.make_config(preset, **overrides)
    g = Graph(name if preset is None else f"{name}-{preset}")
    spec.build(g, cfg, loss)
    dims = spec.dims(cfg)
    g.meta = {"model": name, "preset": preset, "config": cfg.to_json(),
              "dims": dims, "int_ranges": spec.int_ranges(cfg)}
    if hasattr(cfg, "max_len"):  # sequence axes index a max_len position table
        g.meta["dim_limits"] = {k: cfg.max_len for k in dims if k != "B"}
    return g.validate()


__all__ = ["MODELS", "ModelSpec", "build_model", "get_spec"]
