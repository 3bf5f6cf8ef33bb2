"""Per-scope layouts for the HTML viewer, by the same ``dot`` and DOT as the SVG path.

Each scope is laid out on its own: its ops, with every child scope as one collapsed
block. The page composes them when a block is opened, so a graph ``dot`` cannot lay out
in one piece (gpt2-small forward+backward, 10,762 boxes) opens at once and expands on
demand. All scopes go to one ``dot -Tjson`` process, several graphs in one input.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field, replace

from tgraph.errors import TGraphError
from tgraph.ir import Graph
from tgraph.render.dot import to_dot
from tgraph.render.hierarchy import BACKWARD, DETAIL_SCOPES, Path, level, split_scope
from tgraph.render.view import View, build_view

OPENABLE = tuple(sorted(DETAIL_SCOPES))  # the page opens detail scopes on a click


@dataclass
class ScopeLayout:
    """One scope's own layout: xdot drawing operations per object, from ``dot -Tjson``."""

    path: Path
    view: View  # the scope's items, clusters relative to the scope
    keys: dict[str, str] = field(default_factory=dict)  # DOT id -> stable item key
    blocks: dict[str, str] = field(default_factory=dict)  # DOT id -> scope key it opens
    drawing: dict | None = None


def scope_key(path: Path) -> str:
    return "/".join(path)


def item_keys(graph: Graph, view: View) -> dict[str, str]:
    """DOT id -> a key that names the same thing in every view of the graph: a node's
    name, ``scope:<path>`` for a block, ``in:``/``out:`` for model inputs and outputs."""
    names = {id(n): n.name for n in graph.nodes}
    keys = {}
    for key, dot_id in view.ids.items():
        kind = key[0]
        if kind == "op":
            keys[dot_id] = names[key[1]]
        elif kind == "block":
            keys[dot_id] = "scope:" + scope_key(key[1])
        elif kind == "input":
            keys[dot_id] = "in:" + key[1]
        elif kind in ("output", "grad"):
            keys[dot_id] = "out:" + view.items[dot_id].tooltip
        else:  # a weight or constant drawn beside its consumer
            keys[dot_id] = f"{kind}:{view.items[dot_id].tooltip}"
    return keys


def scope_layouts(graph: Graph, fold: bool = True, rankdir: str = "TB",
                  time_budget: float = 120.0, color: str | None = None) -> list[ScopeLayout]:
    """Every drawn scope's own layout (the root first); ``color`` shades boxes as in SVG,
    each by its share among the boxes of its depth."""
    levels = {level(split_scope(n.scope)) for n in graph.nodes}
    layouts: dict[Path, ScopeLayout] = {}
    titles: dict[Path, str] = {(): graph.name}  # a block's title names its layout too
    for depth in range(1, max(levels, default=0) + 2):
        view = build_view(graph, depth, fold, color, OPENABLE)
        keys = item_keys(graph, view)
        made_by = {dot_id: key for key, dot_id in view.ids.items()}
        for dot_id, item in view.items.items():
            home = _home(item.cluster, depth)
            if home is None:
                continue
            if home not in layouts:
                layouts[home] = ScopeLayout(home, View(titles.get(home, home[-1:] and home[-1]),
                                                       heat=color))
            sub = layouts[home]
            sub.view.items[dot_id] = replace(item, cluster=item.cluster[len(home):])
            sub.keys[dot_id] = keys[dot_id]
            if item.kind == "block":
                sub.blocks[dot_id] = keys[dot_id][len("scope:"):]
                titles[made_by[dot_id][1]] = " · ".join(item.lines[:2] if "folded" in item.marks
                                          else item.lines[:1])
        _take_edges([s for s in layouts.values() if level(s.path) == depth - 1], view)
    # scopes a finite depth always boxes (the backward of a leaf block) open at depth None
    view = build_view(graph, None, fold, color, OPENABLE)
    keys, late = item_keys(graph, view), {}
    for dot_id, item in view.items.items():
        home = item.cluster
        if home in layouts or home in ((), (BACKWARD,)):
            continue
        if home not in late:
            late[home] = ScopeLayout(home, View(titles.get(home, home[-1]), heat=color))
        late[home].view.items[dot_id] = replace(item, cluster=())
        late[home].keys[dot_id] = keys[dot_id]
    _take_edges(list(late.values()), view)
    layouts.update(late)
    ordered = sorted(layouts.values(), key=lambda s: (len(s.path), s.path))
    _lay_out(ordered, rankdir, time_budget)
    return ordered


def _home(cluster: Path, depth: int) -> Path | None:
    """The scope whose own layout holds an item of the depth-``depth`` view: the item's
    cluster when that is a scope of level depth-1 (the root also holds ``backward``)."""
    if cluster in ((), (BACKWARD,)):
        return () if depth == 1 else None
    return cluster if level(cluster) == depth - 1 else None


def _take_edges(subs: list[ScopeLayout], view: View) -> None:
    """Give each layout the edges between its own items; cluster titles for its clusters."""
    home = {i: sub for sub in subs for i in sub.view.items}
    for e in view.edges:
        sub = home.get(e.src)
        if sub is not None and home.get(e.dst) is sub:
            sub.view.edges.append(e)
    for sub in subs:
        for path in {i.cluster for i in sub.view.items.values() if i.cluster}:
            sub.view.cluster_titles[path] = [path[-1]]


def _lay_out(layouts: list[ScopeLayout], rankdir: str, time_budget: float) -> None:
    exe = shutil.which("dot")
    if exe is None:
        raise TGraphError("Graphviz 'dot' is not installed, so no HTML viewer was written "
                          "(install graphviz, e.g. 'apt install graphviz')")
    source = "".join(to_dot(s.view, rankdir, legend=False).source for s in layouts)
    try:
        done = subprocess.run([exe, "-Tjson"], input=source.encode(), capture_output=True,
                              timeout=time_budget, check=False)
    except subprocess.TimeoutExpired:
        raise TGraphError(f"laying out {len(layouts)} scopes took over {time_budget:g} s; "
                          "try folding (--fold)") from None
    if done.returncode:
        raise TGraphError(f"dot failed: {done.stderr.decode(errors='replace')[:500]}")
    text, decoder, at = done.stdout.decode(), json.JSONDecoder(), 0
    for sub in layouts:
        while text[at].isspace():
            at += 1
        sub.drawing, at = decoder.raw_decode(text, at)
