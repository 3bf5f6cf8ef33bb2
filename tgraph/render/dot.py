"""Draw a View as DOT: nested clusters, styled items, shape-labelled edges, a legend.

Every ID and attribute goes through escape.dot_quote (the Digraph does it); HTML-like
labels are built with escape.html_label from text escaped by escape.html_text.
"""

from __future__ import annotations

import itertools

from tgraph.render.contrast import AA, contrast, ink_on, legible
from tgraph.render.escape import Digraph, HtmlLabel, html_label, html_text
from tgraph.render.heat import heat_fill
from tgraph.render.hierarchy import Path
from tgraph.render.view import HEAT_NAMES, View

FONT = "Helvetica"
INK = "#444444"
BACKWARD = "#6a3d9a"
RESIDUAL = "#d95f02"
WEIGHT = "#a08a00"

INPUT_WEIGHT = 8
# Text: at least 9 pt, and at least WCAG AA (4.5:1) against the fill behind it; the
# coloured edge lines keep their hue, their labels a darker shade of it.
MIN_PT = 9
SECONDARY = "#555555"
RESIDUAL_TEXT = "#9c3d00"
SMALL = {"fontsize": str(MIN_PT), "height": "0.2", "width": "0.3", "margin": "0.04,0.01"}
ITEM_STYLE = {
    "op": {"shape": "box", "style": "rounded,filled", "fillcolor": "#ffffff", "color": INK,
           "fontsize": "10", "height": "0.3", "margin": "0.1,0.03"},
    "block": {"shape": "box", "style": "filled", "fillcolor": "#dbe9f6", "color": "#2c5d8a",
              "fontsize": "10", "margin": "0.12,0.06"},
    "weight": {"shape": "box", "style": "filled", "fillcolor": "#fff4b8", "color": WEIGHT,
               **SMALL},
    "const": {"shape": "box", "style": "filled,dashed", "fillcolor": "#eeeeee",
              "color": "#888888", **SMALL},
    "input": {"shape": "invhouse", "style": "filled,bold", "fillcolor": "#c7e9c0",
              "color": "#238b45", "fontsize": "10"},
    "output": {"shape": "house", "style": "filled,bold", "fillcolor": "#fdd0a2",
               "color": "#a63603", "fontsize": "10"},
    "grad": {"shape": "house", "style": "filled", "fillcolor": "#e5d8f5", "color": BACKWARD,
             "fontsize": str(MIN_PT), "height": "0.25", "margin": "0.04,0.02"},
}
MARK_STYLE = {  # applied after ITEM_STYLE, in this order
    "backward": {"color": BACKWARD, "fillcolor": "#f1ebf9"},
    "residual": {"color": RESIDUAL, "fillcolor": "#fde0c5"},
    "folded": {"peripheries": "2"},
    "changed": {"color": "#b35806", "fillcolor": "#fee0b6", "penwidth": "2"},
    "moved": {"color": "#2166ac", "fillcolor": "#c6dbef", "penwidth": "2"},
    "added": {"color": "#1a9850", "fillcolor": "#d9f0d3", "penwidth": "2"},
    "removed": {"color": "#d73027", "fillcolor": "#fddbc7", "penwidth": "2",
                "style": "filled,dashed"},
}
EDGE_STYLE = {
    "weight": {"color": WEIGHT, "arrowsize": "0.4", "penwidth": "0.7"},
    "shape": {"style": "dotted", "penwidth": "0.8", "arrowhead": "open"},
    "residual": {"color": RESIDUAL, "penwidth": "2.2", "fontcolor": RESIDUAL_TEXT},
    "backward": {"color": BACKWARD, "fontcolor": BACKWARD, "dir": "back"},
    "saved": {"color": BACKWARD, "style": "dashed", "constraint": "false",
              "fontcolor": BACKWARD, "arrowhead": "empty"},
    "added": {"color": "#1a9850", "penwidth": "2.2", "fontcolor": "#0e6633"},
    "removed": {"color": "#d73027", "style": "dashed", "penwidth": "1.6", "constraint": "false",
                "fontcolor": "#b2182b"},
}
CLUSTER_FILLS = ("#f4f6f8", "#e8eef5", "#f9f9f9", "#edf3ea", "#f8f4ec")
LEGEND = {  # mark or kind -> (swatch colour, text)
    "input": ("#c7e9c0", "model input"),
    "output": ("#fdd0a2", "model output"),
    "op": ("#ffffff", "primitive op"),
    "weight": ("#fff4b8", "parameter (weight), drawn beside its op"),
    "const": ("#eeeeee", "constant tensor"),
    "block": ("#dbe9f6", "collapsed block: shapes, params, FLOPs"),
    "folded": ("#dbe9f6", "×N: identical blocks, one drawn"),
    "residual": ("#fde0c5", "residual add; thick orange edge = skip path"),
    "backward": ("#f1ebf9", "backward pass; dashed = saved activation"),
    "grad": ("#e5d8f5", "∂L/∂w: gradient output"),
    "added": ("#d9f0d3", "only in B (added)"),
    "removed": ("#fddbc7", "only in A (removed)"),
    "moved": ("#c6dbef", "in both, moved to new inputs"),
    "changed": ("#fee0b6", "in both, attributes or shapes changed"),
}


def item_label(lines: list[str], kind: str, fill: str, heatmap=None) -> HtmlLabel:
    """Title (bold for ops and blocks) and detail lines, in inks that read on ``fill``;
    an attention pattern under them as a table of cells."""
    title, *rest = lines
    ink = ink_on(fill)
    detail = SECONDARY if contrast(SECONDARY, fill) >= AA else ink
    body = "".join(f'<BR/><FONT POINT-SIZE="{MIN_PT}" COLOR="{detail}">{html_text(x)}</FONT>'
                   for x in rest)
    bold = kind in ("op", "block", "input", "output")
    text = f"{'<B>' if bold else ''}{html_text(title)}{'</B>' if bold else ''}"
    text = f'<FONT COLOR="{ink}">{text}</FONT>{body}'
    if heatmap is None:
        return html_label(text)
    return html_label(f'<TABLE BORDER="0" CELLSPACING="2" CELLPADDING="0"><TR><TD>{text}</TD>'
                      f"</TR><TR><TD>{heatmap_table(heatmap)}</TD></TR></TABLE>")


def heatmap_table(weights, side: int = 96) -> str:
    """A matrix of weights in [0, 1] as a table of coloured cells (white to blue, sqrt scale,
    as in the HTML viewer): rows are queries, columns keys."""
    cell = max(2, side // max(len(weights), len(weights[0])))
    rows = "".join(
        "<TR>" + "".join(
            f'<TD BGCOLOR="#{s:02x}{s:02x}ff" WIDTH="{cell}" HEIGHT="{cell}" FIXEDSIZE="TRUE"></TD>'
            for s in (round(255 * (1 - min(max(float(v), 0.0), 1.0) ** 0.5)) for v in row))
        + "</TR>" for row in weights)
    return f'<TABLE BORDER="1" COLOR="#888888" CELLBORDER="0" CELLSPACING="0">{rows}</TABLE>'


def to_dot(view: View, rankdir: str = "TB", large: int = 600, legend: bool = True,
           newrank: bool = True) -> Digraph:
    g = Digraph("tgraph", graph_attr={
        "rankdir": rankdir, "fontname": FONT, "fontsize": "12", "labelloc": "t",
        **({"newrank": "true"} if newrank else {}),  # 2.43 reads any value as on
        "label": html_label(f"<B>{html_text(view.title)}</B>"), "nodesep": "0.18", "ranksep": "0.22",
        "tooltip": view.title},
        node_attr={"fontname": FONT}, edge_attr={
            "fontname": FONT, "fontsize": str(MIN_PT), "color": "#555555", "fontcolor": "#333333",
            "arrowsize": "0.6"})
    if len(view.items) > large:
        # Network simplex can take minutes on long edges in big graphs; two passes suffice.
        g.graph_attr.update(nslimit="2", nslimit1="2")
    members: dict[Path, list[str]] = {}
    for node_id, item in view.items.items():
        members.setdefault(item.cluster, []).append(node_id)
    children: dict[Path, list[Path]] = {}
    for path in view.cluster_titles:
        children.setdefault(path[:-1], []).append(path)
    beside = {e.src: e.dst for e in view.edges if "weight" in e.marks}
    _emit(g, (), view, members, children, itertools.count(), beside)
    # Declared in reverse (as are each cluster's nodes): dot 2.4x starts a cluster's
    # ordering from its declarations reversed, so build order reads left to right.
    for e in reversed(view.edges):
        attrs = {"label": e.label} if e.label else {}
        if e.port:
            attrs["headport"] = e.port
        # an edge inside a deep scope pulls harder than one entering it from far away, so a
        # head stays as tall as its chain of ops and an input from the encoder stretches
        # the long edge, not the cross-attention box
        # (a model input's edges pull hardest: each embedding sits at the top, not beside
        # the stack that reads it much later)
        attrs["weight"] = str(1 + len(_common([view.items[e.src].cluster,
                                               view.items[e.dst].cluster]))
                              if view.items[e.src].kind != "input" else INPUT_WEIGHT)
        if e.marks:  # SVG classes: style or query the drawing with CSS
            attrs["class"] = " ".join(sorted(e.marks))
        for mark in sorted(e.marks):
            attrs.update(EDGE_STYLE.get(mark, {}))
        if attrs.get("dir") == "back":  # backward flows upward beside the forward pass
            g.edge(e.dst, e.src, **attrs)
        else:
            g.edge(e.src, e.dst, **attrs)
    if legend:
        _legend(g, view)
    return g


def _emit(g, path: Path, view: View, members, children, serial, beside) -> None:
    for node_id in reversed(members.get(path, [])):  # see to_dot
        item = view.items[node_id]
        attrs = dict(ITEM_STYLE[item.kind])
        for mark, style in MARK_STYLE.items():
            if mark in item.marks:
                attrs.update(style)
        if item.heat is not None and view.heat:
            attrs["fillcolor"] = legible(heat_fill(item.heat, view.heat))
        g.node(node_id, item_label(item.lines, item.kind, attrs["fillcolor"], item.heatmap),
               tooltip=item.tooltip, **{"class": " ".join([item.kind, *sorted(item.marks)])},
               **attrs)
    if path == ():  # inputs on top, outputs at the bottom
        for kind, rank in (("input", "source"), ("output", "sink")):
            ids = [i for i in members.get((), []) if view.items[i].kind == kind]
            if ids:
                g.same_rank(rank, ids)
    for child in children.get(path, []):
        title, *sub = view.cluster_titles[child]
        back = child[0] == "backward"
        label = html_label(f"<B>{html_text(title)}</B>" + "".join(
            f'<BR/><FONT POINT-SIZE="{MIN_PT}">{html_text(s)}</FONT>' for s in sub))
        with g.subgraph(name=f"cluster_{next(serial)}") as c:
            c.attr(label=label, labeljust="l", fontsize="10", style="rounded,filled",
                   fillcolor="#faf7fd" if back else CLUSTER_FILLS[(len(child) - 1) % 5],
                   color=BACKWARD if back else "#8c8c8c",
                   penwidth="2" if child in view.folded_clusters else "1",
                   tooltip="/".join(child))
            _emit(c, child, view, members, children, serial, beside)
    for w in members.get(path, []):  # a weight on its op's rank: the weight row of the
        if w in beside:  # next layer never shares a rank with this one's last op
            g.same_rank("same", [w, beside[w]])
    for group in view.aligned:
        if _common(view.items[i].cluster for i in group) == path:
            g.same_rank("same", group)
    for row in view.rows:  # one rank, in order: an invisible flat edge binds only inside
        for a, b in zip(row, row[1:]):  # one cluster, so each goes into theirs
            if view.items[a].cluster == view.items[b].cluster == path:
                g.same_rank("same", [a, b])
                g.edge(a, b, style="invis")


def _common(paths) -> Path:
    paths = list(paths)
    n = 0
    while all(len(p) > n and p[n] == paths[0][n] for p in paths):
        n += 1
    return paths[0][:n]


def _legend(g, view: View) -> None:
    shown = {i.kind for i in view.items.values()}
    shown |= {m for i in view.items.values() for m in i.marks}
    rows = "".join(
        f'<TR><TD BGCOLOR="{colour}" WIDTH="18"> </TD><TD ALIGN="LEFT">{html_text(text)}</TD></TR>'
        for key, (colour, text) in LEGEND.items() if key in shown)
    if view.heat:
        rows += (f'<TR><TD BGCOLOR="{heat_fill(1.0, view.heat)}"> </TD><TD ALIGN="LEFT">'
                 f'darker = larger share of {HEAT_NAMES[view.heat]}</TD></TR>')
    rows += '<TR><TD COLSPAN="2" ALIGN="LEFT">edge labels: tensor shapes</TD></TR>'
    g.node("legend", html_label(f'<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="2">{rows}</TABLE>'),
           shape="box", style="rounded", color="#bbbbbb", fontsize=str(MIN_PT), tooltip="legend",
           **{"class": "legend"})
