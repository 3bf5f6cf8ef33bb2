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
from tgraph.render.hierarchy import ScopeTree, split_scope
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
    for k in sorted(touched, key=str):  # a fixed order: same picture on every run
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


def diff_view(a: Graph, b: Graph, fold: bool = True) -> View:
    """A and B in one view, drawn as B with A's differences; identical blocks fold (in
    both graphs alike) unless ``fold`` is False."""
    pairs = match_nodes(a, b)
    a_of = {id(m): n for n in a.nodes if (m := pairs.get(id(n))) is not None}
    # keys by position in the graph, never by id(): orders built from them must not
    # depend on where objects happen to live in memory
    at_a = {id(n): i for i, n in enumerate(a.nodes)}
    at_b = {id(n): i for i, n in enumerate(b.nodes)}
    wb = Wiring(b, lambda n: ("m", at_b[id(n)], n.op) if id(n) in a_of else ("b", at_b[id(n)]))
    wa = Wiring(a, lambda n: ("m", at_b[id(pairs[id(n)])], n.op) if id(n) in pairs
                else ("a", at_a[id(n)]))
    only = {k for k in (*wa.key.values(), *wb.key.values()) if k[0] != "m"}
    moved = moved_nodes(wa, wb, only)

    fold_a, fold_b = ((Folding.of(ScopeTree.of(a)), Folding.of(ScopeTree.of(b))) if fold
                      else (Folding.none(), Folding.none()))
    view = build_view(b, depth=None, fold=fold)  # folds as render does: the same runs
    view.title = f"{a.name} (A) → {b.name} (B)"
    item_of = {}  # wiring key -> item id
    for n in b.nodes:  # a hidden copy (head_3) is drawn as its run's first (head_0)
        k, shown = wb.key[id(n)], fold_b.drawn(n)
        item_of[k] = view.ids[("op", id(shown))]
        item = view.items[item_of[k]]
        if shown is not n:
            continue
        if k[0] == "b":
            item.marks.add("added")
        elif k in moved:
            item.marks.add("moved")
        elif _differs(a_of[id(n)], n):
            item.marks.add("changed")
    only_a = [n for n in a.nodes if wa.key[id(n)][0] == "a"]
    for n in sorted(only_a, key=lambda n: fold_a.drawn(n) is not n):  # drawn copies first
        shown = fold_a.drawn(n)
        item_of[wa.key[id(n)]] = item_of[wa.key[id(shown)]] if shown is not n else view.add(
            ("a-op", at_a[id(n)]), Item("op", [op_label(n)], split_scope(n.scope),
                                        f"only in A: {n.name}", {"removed"}))
    for v in (*a.inputs, *b.inputs):
        item_of[("input", v.name)] = view.add(("input", v.name), Item(
            "input", [f"input {v.name}", f"{fmt_shape(v.shape)} {v.dtype}"], (), v.name,
            {"io"} if any(u.name == v.name for u in b.inputs) else {"io", "removed"}))
    add_cluster_titles(view, fold_b)

    def drawn(edges, wiring, graph, folding):
        """Edges as drawn items; one copy's edge stands for every copy's, and an edge from
        one copy into the next (layer_0 -> layer_1) is folded away as render does."""
        node_of = {wiring.key[id(n)]: n for n in graph.nodes}
        out = {}
        for s, d in sorted(edges, key=str):
            src = None if s[0] == "input" else node_of[s[0]]
            if src is not None and folding.crosses_copies(src, node_of[d]):
                continue
            pair = (item_of[s if s[0] == "input" else s[0]], item_of[d])
            if pair[0] != pair[1]:
                out.setdefault(pair, s)
        return out

    in_a, in_b = drawn(wa.edges, wa, a, fold_a), drawn(wb.edges, wb, b, fold_b)
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

