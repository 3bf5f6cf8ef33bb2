"""Move weights between the two attention layouts (``heads=split`` and ``heads=batched``).

Split head h owns ``<block>/head_h/<leaf>``; the batched block owns ``<block>/<leaf>``:

- Q/K/V projections and biases (w_q, w_k, w_v, b_q, b_k, b_v, w_v_down): head h is
  columns h·w … (h+1)·w of the batched matrix (last axis), w the per-head width;
- per-head tensors (w_v_up, the additive scores' scores/w_q, scores/w_k, scores/v): head h
  is entry h of the batched tensor's first axis.

Everything else (w_o, LayerNorms, embeddings, feed-forward) has the same name in both.

    batched = build_model("gpt", heads="batched")
    weights = to_layout(split_weights, batched)   # and back: to_layout(weights, split_graph)
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping

import numpy as np

from tgraph.errors import TGraphError
from tgraph.ir import Graph

HEAD = re.compile(r"^(?P<block>.*)/head_(?P<h>\d+)/(?P<leaf>.+)$")
COLUMNS = frozenset({"w_q", "w_k", "w_v", "b_q", "b_k", "b_v", "w_v_down"})


def to_layout(params: Mapping[str, np.ndarray], graph: Graph) -> dict[str, np.ndarray]:
    """Weights named and shaped for ``graph``, from weights in either heads layout."""
    shapes = {p.name: tuple(p.shape) for p in graph.params}
    n_heads = graph.meta["config"]["n_heads"]
    out, per_head = {}, defaultdict(dict)
    for name, arr in params.items():
        m = HEAD.match(name)
        if name in shapes:
            out[name] = arr
        elif m:
            per_head[(m["block"], m["leaf"])][int(m["h"])] = arr
    for (block, leaf), heads in per_head.items():  # split -> batched
        lost = [h for h in range(n_heads) if h not in heads]
        if lost:
            raise TGraphError(f"weights lack {block}/head_{lost[0]}/{leaf}: every head of a "
                              "block is needed to batch it")
        parts = [heads[h] for h in range(n_heads)]
        joined = np.concatenate(parts, -1) if leaf in COLUMNS else np.stack(parts)
        out[f"{block}/{leaf}"] = joined.reshape(shapes[f"{block}/{leaf}"])
    for name, shape in shapes.items():  # batched -> split
        m = HEAD.match(name)
        whole = params.get(f"{m['block']}/{m['leaf']}") if m and name not in out else None
        if whole is not None:
            h = int(m["h"])
            part = np.split(whole, n_heads, -1)[h] if m["leaf"] in COLUMNS else whole[h]
            out[name] = part.reshape(shape)
    missing = sorted(set(shapes) - set(out))
    if missing:
        raise TGraphError(f"weights lack {len(missing)} parameters of graph {graph.name!r}, "
                          f"e.g. {missing[0]!r}")
    return {name: out[name] for name in shapes}
