"""Fold structurally identical sibling blocks (12 decoder layers, 12 heads) into one "×N".

Two scopes are identical when their nodes, put in a canonical order, match one to one:
same relative scope, op, attrs and output types, and each input is the same kind of
thing — the k-th node inside, a parameter or constant of the same type (names may
differ), or the j-th distinct value from outside of the same type. The forms themselves
are compared (hashes only choose the order), and the order gives the node-to-node
correspondence that maps a hidden copy onto the copy that is drawn.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from tgraph.ir import CONST, PARAM, Node
from tgraph.render.hierarchy import Path, ScopeTree, split_scope


@dataclass(frozen=True)
class Run:
    """Consecutive identical siblings; ``members[0]`` is drawn, the others map onto it."""

    members: tuple[Path, ...]

    @property
    def count(self) -> int:
        return len(self.members)

    def title(self) -> str:
        """``layer ×12`` from ``layer_0 … layer_11``, or from ``layers/0 … layers/11`` (the
        scopes of an imported PyTorch ModuleList)."""
        path = self.members[0]
        first = path[-1]
        base = first.rstrip("0123456789").rstrip("_.-")
        if not base and len(path) > 1:
            base = path[-2][:-1] if path[-2].endswith("s") else path[-2]
        base = base or first
        return f"{base} ×{self.count}"

    def span(self) -> str:
        return f"{self.members[0][-1]} … {self.members[-1][-1]}"


def canonical(nodes: list[Node], root: Path) -> tuple[tuple, list[Node]]:
    """The scope's canonical form and its nodes in canonical order.

    Order comes from structure, not from the order nodes were emitted (autodiff emits the
    backward of each layer in a slightly different order): each node's label is refined a
    few rounds, Weisfeiler-Lehman style, by its producers' and consumers' labels.
    """
    index = {id(v): (i, k) for i, n in enumerate(nodes) for k, v in enumerate(n.outputs)}
    labels = [hash(_own(n, root, index)) for n in nodes]
    consumers: list[list] = [[] for _ in nodes]
    for j, n in enumerate(nodes):
        for pos, v in enumerate(n.inputs):
            if id(v) in index:
                i, k = index[id(v)]
                consumers[i].append((j, pos, k))
    for _ in range(WL_ROUNDS):
        labels = [hash((labels[j],
                        tuple(labels[index[id(v)][0]] if id(v) in index else 0 for v in n.inputs),
                        tuple(sorted((labels[c], pos, k) for c, pos, k in consumers[j]))))
                  for j, n in enumerate(nodes)]
    ordered = [nodes[j] for j in sorted(range(len(nodes)), key=lambda j: (labels[j], j))]
    return _form(ordered, root), ordered


WL_ROUNDS = 3


def _own(n: Node, root: Path, index) -> tuple:
    """What a node is, apart from its neighbours inside the scope."""
    ins = tuple("node" if id(v) in index else _leaf(v) for v in n.inputs)
    return (split_scope(n.scope)[len(root):], n.op, json.dumps(n.attrs, sort_keys=True,
            default=str), tuple(str(v.type) for v in n.outputs), ins)


def _leaf(v) -> tuple:
    if v.kind == PARAM:
        return ("param", str(v.type))
    if v.kind == CONST:
        return ("const", str(v.type), hashlib.sha1(v.data.tobytes()).hexdigest()[:16])
    return ("outside", str(v.type))


def _form(nodes: list[Node], root: Path) -> tuple:
    index = {id(v): (i, k) for i, n in enumerate(nodes) for k, v in enumerate(n.outputs)}
    outside: dict[int, int] = {}
    form = []
    for n in nodes:
        ins = tuple(("node", *index[id(v)]) if id(v) in index else
                    (*_leaf(v), outside.setdefault(id(v), len(outside)))
                    for v in n.inputs)
        form.append((*_own(n, root, index)[:4], ins))
    return tuple(form)


def find_runs(tree: ScopeTree) -> tuple[list[Run], dict[Path, list[Node]]]:
    """Runs of two or more consecutive identical siblings anywhere in the tree, and each
    run member's nodes in canonical order (the i-th of one copy is the i-th of another).
    Computed once per tree (canonical forms are most of a large page's build time)."""
    if "_runs" not in tree.__dict__:
        tree.__dict__["_runs"] = _find_runs(tree)
    return tree.__dict__["_runs"]


def _find_runs(tree: ScopeTree) -> tuple[list[Run], dict[Path, list[Node]]]:
    runs, ordered = [], {}
    for kids in tree.children.values():
        forms = []
        for k in kids:
            form, ordered[k] = canonical(tree.nodes[k], k)
            forms.append(form)
        start = 0
        for i in range(1, len(kids) + 1):
            if i == len(kids) or forms[i] != forms[start]:
                if i - start > 1:
                    runs.append(Run(tuple(kids[start:i])))
                start = i
    return runs, ordered


@dataclass
class Folding:
    """Where each node is drawn once runs are folded, and which run copy it came from."""

    drawn_as: dict[int, Node]  # id(node) -> the node drawn for it
    copy_of: dict[int, tuple[tuple[int, int], ...]]  # id(node) -> ((run index, copy), ...)
    runs: list[Run]
    run_at: dict[Path, Run]  # drawn member path -> its run

    @classmethod
    def none(cls) -> Folding:
        return cls({}, {}, [], {})

    @classmethod
    def of(cls, tree: ScopeTree) -> Folding:
        runs, ordered = find_runs(tree)
        step: dict[int, Node] = {}
        copy_of: dict[int, list] = {}
        for r, run in enumerate(runs):
            shown = ordered[run.members[0]]
            for c, member in enumerate(run.members):
                for i, n in enumerate(ordered[member]):
                    copy_of.setdefault(id(n), []).append((r, c))
                    if c:
                        step[id(n)] = shown[i]
        drawn_as = {}
        for key, n in step.items():  # follow nested folds: layer_3/head_5 -> layer_0/head_0
            while id(n) in step:
                n = step[id(n)]
            drawn_as[key] = n
        return cls(drawn_as, {k: tuple(v) for k, v in copy_of.items()}, runs,
                   {run.members[0]: run for run in runs})

    def drawn(self, n: Node) -> Node:
        return self.drawn_as.get(id(n), n)

    def crosses_copies(self, a: Node, b: Node) -> bool:
        """An edge from one copy of a run into another (layer_2 -> layer_3): folded away."""
        ca = dict(self.copy_of.get(id(a), ()))
        return any(ca.get(r, c) != c for r, c in self.copy_of.get(id(b), ()))
