"""Parameters with the initialisation GPT-2 uses: weights N(0, 0.02), biases 0, norms as
their op declares (LayerNorm: gain 1, bias 0); all in the config's dtype, named by the
current scope."""

from __future__ import annotations

from tgraph.ir import Graph, Value
from tgraph.models import roles


def weight(g: Graph, name: str, shape, cfg) -> Value:
    return g.param(name, shape, cfg.dtype, {"dist": "normal", "std": 0.02})


def zeros(g: Graph, name: str, shape, cfg) -> Value:
    return g.param(name, shape, cfg.dtype, {"dist": "zeros"})


def norm(cfg, x: Value, scope: str) -> Value:
    """The config's norm op (LayerNorm: gamma 1, beta 0) under ``scope``, with its params."""
    with x.graph.scope(scope):
        return roles.apply(cfg.norm_op, x, eps=cfg.eps)
