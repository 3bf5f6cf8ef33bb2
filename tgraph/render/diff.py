"""One diagram of two graphs: what only A has, what only B has, what moved or changed.

Nodes match by (scope, op), the i-th of a kind in A with the i-th in B. A matched node
whose attrs or output types differ is *changed*. A matched node is *moved* when it sits on
different inputs and passing data straight through it (in both graphs) is part of the
smallest such set that makes the two wirings agree: Post-LN vs Pre-LN moves exactly the
LayerNorms, while the residual adds next to them, whose inputs also differ, stay put.
"""

from __future__ import annotations

import json
from collections import defaultdict

from tgraph.ir import CONST, INPUT, PARAM, Graph, Node
from tgraph.render.fold import Folding
from tgraph.render.hierarchy import split_scope
from tgraph.render.labels import op_label
from tgraph.render.view import Edge, Item, View, add_cluster_titles, build_view
from tgraph.shapes import fmt_shape


def match_nodes(a: Graph, b: Graph) -> dict[int, Node]:
    """id(node of A) -> its partner in B."""
    pool = defaultdict(list)
    for n in b.nodes:
        pool[(n.scope, n.op)].append(n)
    taken = defaultdict(int)
    pairs = {}
    for n in a.nodes:
        key = (n.scope, n.op)
        if taken[key] < len(pool[key]):
            pairs[id(n)] = pool[key][taken[key]]
            taken[key] += 1
    return pairs


class Wiring:
    """One graph's data edges between shared keys: a matched node is keyed by its B node,
    so the same key means the same node in both graphs."""

    def __init__(self, graph: Graph, key_of):
        self.key = {id(n): key_of(n) for n in graph.nodes}
        self.edges: set[tuple] = set()
        self.source: dict = {}  # key -> its one data input, for single-input nodes
        for n in graph.nodes:
            srcs = [self.source_key(v) for v in n.inputs if v.kind not in (PARAM, CONST)]
            self.edges.update((s, self.key[id(n)]) for s in srcs)
            if len(srcs) == 1:
                self.source[self.key[id(n)]] = srcs[0]

    def source_key(self, v):
        return ("input", v.name) if v.kind == INPUT else (self.key[id(v.node)],
                                                           v.node.outputs.index(v))

    def bypassing(self, skip: set) -> set[tuple]:
        """The edges with every node of ``skip`` replaced by a wire from its input."""
        def through(src):
            while isinstance(src, tuple) and len(src) == 2 and src[0] in skip:
                src = self.source[src[0]]
            return src
        return {(through(s), d) for s, d in self.edges if d not in skip}


def moved_nodes(wa: Wiring, wb: Wiring, only: set) -> set:
    """Greedy smallest set of matched single-input nodes to pass through so that both
    wirings agree; tried op kind by op kind, then pruned one node at a time."""
    skip = {k for k in only if k in wa.source or k in wb.source}

    def cost(s):
        return len(wa.bypassing(s) ^ wb.bypassing(s))

    touched = {d for s, d in wa.edges ^ wb.edges} | {s[0] for s, d in wa.edges ^ wb.edges
                                                     if len(s) == 2}
    groups = defaultdict(set)
    for k in touched:
        if k[0] == "m" and k in wa.source and k in wb.source:
            groups[k[2]].add(k)
    best = cost(skip)
    for op in sorted(groups, key=lambda o: len(groups[o])):
        c = cost(skip | groups[op])
        if c < best:
            skip, best = skip | groups[op], c
    for k in sorted(skip - only, key=str):
        if cost(skip - {k}) <= best:
            skip = skip - {k}
    return skip - only


def diff_view(a: Graph, b: Graph) -> View:
    pairs = match_nodes(a, b)
    a_of = {id(m): n for n in a.nodes if (m := pairs.get(id(n))) is not None}
    wb = Wiring(b, lambda n: ("m", id(n), n.op) if id(n) in a_of else ("b", id(n)))
    wa = Wiring(a, lambda n: ("m", id(pairs[id(n)]), n.op) if id(n) in pairs else ("a", id(n)))
    only = {k for k in (*wa.key.values(), *wb.key.values()) if k[0] != "m"}
    moved = moved_nodes(wa, wb, only)

    view = build_view(b, depth=None, fold=False)
    view.title = f"{a.name} (A) → {b.name} (B)"
    item_of = {}  # wiring key -> item id
    a_by_id = {id(n): n for n in a.nodes}
    for n in b.nodes:
        k = wb.key[id(n)]
        item_of[k] = view.ids[("op", id(n))]
        item = view.items[item_of[k]]
        if k[0] == "b":
            item.marks.add("added")
        elif k in moved:
            item.marks.add("moved")
        elif _differs(a_of[id(n)], n):
            item.marks.add("changed")
    for n_id, k in wa.key.items():
        if k[0] == "a":
            n = a_by_id[n_id]
            item_of[k] = view.add(("a-op", n_id), Item("op", [op_label(n)], split_scope(n.scope),
                                                       f"only in A: {n.name}", {"removed"}))
    for v in (*a.inputs, *b.inputs):
        item_of[("input", v.name)] = view.add(("input", v.name), Item(
            "input", [f"input {v.name}", f"{fmt_shape(v.shape)} {v.dtype}"], (), v.name,
            {"io"} if any(u.name == v.name for u in b.inputs) else {"io", "removed"}))
    add_cluster_titles(view, Folding.none())

    def drawn(edges):
        return {(item_of[s if s[0] == "input" else s[0]], item_of[d]): s for s, d in edges}

    in_a, in_b = drawn(wa.edges), drawn(wb.edges)
    for e in view.edges:
        if "weight" not in e.marks and (e.src, e.dst) in in_b and (e.src, e.dst) not in in_a:
            e.marks.add("added")
    shape_of = {wa.source_key(v): fmt_shape(v.shape) for n in a.nodes for v in n.outputs}
    shape_of.update({("input", v.name): fmt_shape(v.shape) for v in a.inputs})
    for (s, d), src_key in in_a.items():
        if (s, d) not in in_b:
            view.edges.append(Edge(s, d, shape_of.get(src_key, ""), {"removed"}))
    return view


def _differs(x: Node, y: Node) -> bool:
    return (json.dumps(x.attrs, sort_keys=True, default=str)
            != json.dumps(y.attrs, sort_keys=True, default=str)
            or [v.type for v in x.outputs] != [v.type for v in y.outputs])

