"""Diagrams as dot lays them out: run the real ``dot -Tjson`` on a rendered .dot and read
nodes (with their label's text lines), clusters and edges back, keyed by dot's gvid."""

from __future__ import annotations

import html
import json
import re
import subprocess
from pathlib import Path

from tgraph.render import render

PX_PER_PT = 96 / 72


def read_layout(dot_file: Path) -> dict:
    out = json.loads(subprocess.run(["dot", "-Tjson", str(dot_file)], capture_output=True,
                                    check=True).stdout)
    objs = out["objects"]
    n_sub = out.get("_subgraph_cnt", 0)
    clusters = {i: o for i, o in enumerate(objs[:n_sub]) if o["name"].startswith("cluster")}
    nodes = {o["_gvid"]: o for o in objs[n_sub:]}
    for o in [*clusters.values(), *nodes.values()]:
        o["lines"] = label_lines(o.get("label", ""))
    return {"bb": box(out["bb"]), "clusters": clusters, "nodes": nodes,
            "edges": out.get("edges", [])}


def laid_out(graph, tmp_path, name="g.dot", **kw) -> dict:
    path = tmp_path / name
    render(graph, path, **kw)
    return read_layout(path)


def label_lines(label: str) -> list[str]:
    """The text lines of an HTML-like label (tags dropped, entities decoded)."""
    parts = re.split(r"<BR\s*/?>|</TR>", label)
    lines = [html.unescape(re.sub(r"<[^>]*>", "", p)).replace("\u2060", "").strip()
             for p in parts]
    return [x for x in lines if x]


def box(bb: str) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = map(float, bb.split(","))
    return x0, y0, x1, y1


def kinds(node) -> set[str]:
    return set(node.get("class", "").split())


def of_kind(d, kind):
    return {i: n for i, n in d["nodes"].items() if kind in kinds(n)}


def center(node) -> tuple[float, float]:
    x, y = map(float, node["pos"].split(","))
    return x, y


def empty_ranks(d) -> dict[str, int]:
    """For each cluster (by tooltip): how many ranks its box spans that hold none of its own
    nodes. A box stretched past its contents (a cross-attention head pulled up to the
    encoder's output) spans many; a tight one at most its title's row."""
    ys = {center(n)[1] for n in d["nodes"].values()}
    out = {}
    for c in d["clusters"].values():
        x0, y0, x1, y1 = box(c["bb"])
        own = {center(d["nodes"][i])[1] for i in c.get("nodes", [])}
        out[c["tooltip"]] = sum(y0 <= y <= y1 and y not in own for y in ys)
    return out
