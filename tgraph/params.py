"""Parameter initialisation from each parameter's ``init`` spec, reproducible by seed."""

from __future__ import annotations

import numpy as np

from tgraph.errors import TGraphError
from tgraph.ir import Graph


def init_params(graph: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    """Fresh weights for every parameter. Specs: {"dist": "normal", "std": s},
    {"dist": "uniform", "limit": a}, {"dist": "zeros"}, {"dist": "ones"}."""
    rng = np.random.default_rng(seed)
    out = {}
    for p in graph.params:
        spec = p.init or {"dist": "normal", "std": 0.02}
        dist, shape = spec.get("dist", "normal"), tuple(p.shape)
        if dist == "normal":
            a = rng.normal(0.0, spec.get("std", 0.02), shape)
        elif dist == "uniform":
            lim = spec.get("limit", 0.05)
            a = rng.uniform(-lim, lim, shape)
        elif dist == "zeros":
            a = np.zeros(shape)
        elif dist == "ones":
            a = np.ones(shape)
        else:
            raise TGraphError(f"parameter {p.name!r}: unknown init {dist!r}")
        out[p.name] = a.astype(p.dtype)
    return out
