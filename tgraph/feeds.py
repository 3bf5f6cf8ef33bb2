"""Valid random feeds made from a graph's input types (``tgraph run --random``)."""

from __future__ import annotations

import numpy as np

from tgraph.budget import check_bytes, nbytes
from tgraph.errors import FeedError
from tgraph.ir import Graph
from tgraph.sanitize import clip
from tgraph.shapes import eval_shape, fmt_shape, symbols


def feed_dims(graph: Graph, dims: dict | None = None) -> dict[str, int]:
    """Bindings for the inputs' symbols: given ones, then the graph's hints, else 2."""
    env = {s: 2 for v in graph.inputs for s in symbols(v.shape)}
    env.update(graph.meta.get("dims", {}))
    env.update(dims or {})
    return env


def random_feeds(graph: Graph, dims: dict | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Floats ~ N(0, 1); ints in [0, high) where ``graph.meta["int_ranges"]`` gives high
    (vocabulary sizes, class counts), else [0, 2); bools all True (no padding)."""
    rng = np.random.default_rng(seed)
    env = feed_dims(graph, dims)
    highs = graph.meta.get("int_ranges", {})
    out = {}
    for v in graph.inputs:
        try:
            shape = eval_shape(v.shape, env)
        except KeyError as e:
            raise FeedError(f"input {v.name!r} needs --dim {e.args[0]}=N") from None
        check_bytes(nbytes(shape, np.dtype(v.dtype).itemsize), f"random feed {clip(v.name)} "
                    f"{v.dtype}[{fmt_shape(shape)}]")
        kind = np.dtype(v.dtype).kind
        if kind == "f":
            out[v.name] = rng.standard_normal(shape).astype(v.dtype)
        elif kind == "b":
            out[v.name] = np.ones(shape, dtype=bool)
        else:
            out[v.name] = rng.integers(0, highs.get(v.name, 2), shape).astype(v.dtype)
    return out
