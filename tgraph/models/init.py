"""Parameters with the initialisation GPT-2 uses: weights N(0, 0.02), biases 0, LayerNorm
gain 1, all in the config's dtype and named by the current scope."""

from __future__ import annotations

from tgraph import builder as tb
from tgraph.ir import Graph, Value


def weight(g: Graph, name: str, shape, cfg) -> Value:
    return g.param(name, shape, cfg.dtype, {"dist": "normal", "std": 0.02})


def zeros(g: Graph, name: str, shape, cfg) -> Value:
    return g.param(name, shape, cfg.dtype, {"dist": "zeros"})


def layer_norm(cfg, x: Value, scope: str) -> Value:
    g = x.graph
    with g.scope(scope):
        gamma = g.param("gamma", (cfg.d_model,), cfg.dtype, {"dist": "ones"})
        return tb.layernorm(x, gamma, zeros(g, "beta", (cfg.d_model,), cfg), eps=cfg.eps)
