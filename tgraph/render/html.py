"""The interactive HTML viewer: one self-contained file (no network) holding the graph's
per-scope ``dot`` layouts, node facts, and optionally values from a run.

The page composes the layouts in the browser: opening a block stretches the layout
around it and drops the block's own layout in (``viewer/viewer.js``). Forward, backward
and compiled views of one model travel in the same file. Every name reaches the page as
JSON data in a ``<script type="application/json">`` block, escaped by ``embed_json``,
and the script puts it into the DOM only as text, never as markup.
"""

from __future__ import annotations

import json
import math
import time
from importlib import resources

from tgraph.execute import default_dims, node_flops
from tgraph.io import atomic_write
from tgraph.ir import PARAM, Graph
from tgraph.ops.registry import get_op
from tgraph.render.fold import Folding
from tgraph.render.hierarchy import ScopeTree
from tgraph.render.layout import OPENABLE, ScopeLayout, item_keys, scope_layouts
from tgraph.render.values import Values
from tgraph.render.view import build_view
from tgraph.sanitize import clean_text
from tgraph.shapes import fmt_shape

ASSETS = ("viewer.css", "viewer.js")
NO_LIMIT = 1 << 30  # names are keys in the page: never shortened, so never merged
# Inside <script>, "</script", "<!--" and "]]>" would end or confuse the block; U+2028/9
# end a line in older JS. JSON allows each escaped as \uXXXX, so the data is unchanged.
_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028",
                 "\u2029": "\\u2029"}


def embed_json(obj) -> str:
    """``obj`` as JSON safe to place inside an HTML ``<script>`` element; every string
    (names from a graph file among them) made printable by ``sanitize.clean_text``."""
    text = json.dumps(_clean(obj), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return "".join(_JSON_ESCAPES.get(c, c) for c in text)


def _clean(obj):
    if isinstance(obj, str):
        return clean_text(obj, NO_LIMIT)
    if isinstance(obj, dict):
        return {_clean(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def view_data(graph: Graph, name: str, fold: bool = True, rankdir: str = "TB",
              values: Values | None = None, time_budget: float = 120.0,
              color: str | None = None) -> dict:
    """What the page needs for one view of a graph: layouts, node facts, the data-flow
    edges for path highlighting, and values when a run was made."""
    from tgraph.passes.fuse import expand_fused

    graph = expand_fused(graph)  # the graph build_view draws, so node keys match it
    layouts = scope_layouts(graph, fold, rankdir, time_budget, color)
    full = build_view(graph, None, fold, expand=OPENABLE)
    keys = item_keys(graph, full)
    index = {k: i for i, k in enumerate(dict.fromkeys(keys.values()))}
    data = {
        "name": name, "title": graph.name,
        "layouts": {"/".join(s.path): _layout(s) for s in layouts},
        "nodes": _node_facts(graph, {keys[i] for i, it in full.items.items() if it.kind == "op"}),
        "flow": {"keys": list(index),
                 "edges": [[index[keys[e.src]], index[keys[e.dst]]] for e in full.edges]},
        "folded": _folded_copies(graph) if fold else {},
    }
    if values is not None:
        data["stats"] = values.stats
        data["attention"] = [{"node": p.node, "layer": p.layer, "head": p.head,
                              "queries": p.queries, "keys": p.keys,
                              "weights": [[round(float(x), 6) for x in row] for row in p.weights]}
                             for p in values.patterns]
        data["source"] = values.source
    return data


def _folded_copies(graph: Graph) -> dict[str, str]:
    """Each node of a hidden copy of a folded block -> the node drawn for it."""
    folding = Folding.of(ScopeTree.of(graph))
    return {n.name: folding.drawn(n).name for n in graph.nodes if folding.drawn(n) is not n}


def _node_facts(graph: Graph, drawn: set[str]) -> dict[str, dict]:
    env = default_dims(graph)
    facts = {}
    for n in graph.nodes:
        if n.name not in drawn:
            continue
        facts[n.name] = {
            "op": n.op, "scope": n.scope, "attrs": n.attrs,
            "ins": [f"{v.name}: {v.dtype}[{fmt_shape(v.shape)}]" for v in n.inputs],
            "outs": [f"{v.dtype}[{fmt_shape(v.shape)}]" for v in n.outputs],
            "params": sum(math.prod(v.shape) for v in n.inputs if v.kind == PARAM),
            "flops": node_flops(get_op(n.op), n, env),
        }
    return facts


def _layout(s: ScopeLayout) -> dict:
    """dot's JSON made small: y downward, nodes drawn relative to their centre, xdot
    operations as short arrays."""
    d = s.drawing
    height = float(d["bb"].split(",")[3])

    def flip(x, y):
        return round(x, 1), round(height - y, 1)

    nodes, shapes, by_gvid = [], [], {}
    for obj in d.get("objects", []):
        if "nodes" in obj or "pos" not in obj:  # a cluster: drawn where it is
            shapes.append({"role": "cluster", "ops": _ops(obj, flip)})
            continue
        x, y = flip(*map(float, obj["pos"].split(",")))
        dot_id = obj["name"]
        by_gvid[obj["_gvid"]] = len(nodes)
        item = s.view.items[dot_id]
        nodes.append({
            "key": s.keys[dot_id], "kind": item.kind, "marks": sorted(item.marks),
            "x": x, "y": y, "w": round(float(obj["width"]) * 72, 1),
            "h": round(float(obj["height"]) * 72, 1), "lines": item.lines,
            "block": s.blocks.get(dot_id),
            "ops": _ops(obj, lambda a, b: (round(a - x, 1), round(height - b - y, 1)))})
    for e in d.get("edges", []):
        t, h = by_gvid[e["tail"]], by_gvid[e["head"]]
        shapes.append({"role": "edge", "t": t, "h": h, "tail": nodes[t]["key"],
                       "head": nodes[h]["key"], "ops": _ops(e, flip, ("_draw_", "_ldraw_")),
                       "arrows": [a for f in ("_hdraw_", "_tdraw_") if (a := _ops(e, flip, (f,)))]})
    return {"title": s.view.title, "w": float(d["bb"].split(",")[2]), "h": height,
            "label": _ops(d, flip, ("_ldraw_",)), "nodes": nodes, "shapes": shapes}


def _ops(obj: dict, at, fields=("_draw_", "_ldraw_", "_hdraw_", "_tdraw_")) -> list:
    out = []
    for f in fields:
        for op in obj.get(f, ()):
            kind = op["op"]
            if kind in "cC":
                out.append([kind, op["color"]])
            elif kind == "S":
                out.append(["S", op["style"]])
            elif kind == "F":
                out.append(["F", op["size"], op["face"]])
            elif kind == "t":
                out.append(["t", op["fontchar"]])
            elif kind == "T":  # with the width dot measured: the page draws it that wide
                out.append(["T", *at(*op["pt"]), op["align"], op["text"], round(op["width"], 2)])
            elif kind in "EePpLBb":
                pts = [op["rect"][:2]] if kind in "Ee" else op["points"]
                flat = [c for p in pts for c in at(*p)]
                out.append([kind, flat, *op["rect"][2:]] if kind in "Ee" else [kind, flat])
    return out


def html_page(views: list[dict], title: str) -> str:
    pkg = resources.files("tgraph.render") / "viewer"
    css, js = ((pkg / f).read_text(encoding="utf-8") for f in ASSETS)
    data = embed_json({"title": title, "views": views})
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:\">\n"
        "<title>tgraph viewer</title>\n"
        f"<style>\n{css}</style></head>\n<body>\n"
        f"<script type=\"application/json\" id=\"tgraph-data\">{data}</script>\n"
        f"<script>\n{js}</script>\n</body></html>\n")


def write_html(graph: Graph, path, *, backward: bool = False, level: int = 0,
               fold: bool = True, depth: int | None = 2, rankdir: str = "TB",
               values: Values | None = None, time_budget: float = 120.0,
               color: str | None = None):
    """Write the viewer for ``graph``: its forward view, plus its backward view
    (``backward``) and, at ``level`` 1 or 2, the graph compiled at that level (-O2: fused
    nodes are blocks of their ops), switchable in the page. ``depth``: scopes open when the
    page loads (None: all)."""
    from tgraph.render.api import Rendered, with_backward

    start = time.perf_counter()
    views = [view_data(graph, "forward", fold, rankdir, values, time_budget, color)]
    if backward:
        views.append(view_data(with_backward(graph), "backward", fold, rankdir,
                               time_budget=time_budget, color=color))
    if level:
        from tgraph.passes import optimize

        views.append(view_data(optimize(graph, level)[0], "compiled", fold, rankdir,
                               time_budget=time_budget, color=color))
    for v in views:
        v["open"] = -1 if depth is None else depth
    with atomic_write(path) as f:
        f.write(html_page(views, graph.name))
    boxes = sum(len(lay["nodes"]) for lay in views[0]["layouts"].values())
    return Rendered(path, boxes, sum(len(v["flow"]["edges"]) for v in views[:1]), depth,
                    time.perf_counter() - start)
