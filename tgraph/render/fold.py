"""Fold structurally identical sibling blocks (12 decoder layers, 12 heads) into one "×N".

Two scopes are identical when their node lists match one to one: same relative scope,
op, attrs and output types, and each input is the same kind of thing — the k-th node
inside, a parameter or constant of the same type (names may differ), or the j-th distinct
value from outside of the same type. This canonical form is exact (no hash collisions
matter: the forms themselves are compared) and also gives the node-to-node
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
        """``layer ×12`` from ``layer_0 … layer_11``."""
        first = self.members[0][-1]
        base = first.rstrip("0123456789").rstrip("_.-") or first
        return f"{base} ×{self.count}"

    def span(self) -> str:
        return f"{self.members[0][-1]} … {self.members[-1][-1]}"


def canonical_form(nodes: list[Node], root: Path) -> tuple:
    index = {id(v): (i, k) for i, n in enumerate(nodes) for k, v in enumerate(n.outputs)}
    outside: dict[int, int] = {}
    form = []
    for n in nodes:
        ins = []
        for v in n.inputs:
            if id(v) in index:
                ins.append(("node", *index[id(v)]))
            elif v.kind == PARAM:
                ins.append(("param", str(v.type)))
            elif v.kind == CONST:
                digest = hashlib.sha1(v.data.tobytes()).hexdigest()[:16]
                ins.append(("const", str(v.type), digest))
            else:
                ins.append(("outside", outside.setdefault(id(v), len(outside)), str(v.type)))
        rel = split_scope(n.scope)[len(root):]
        form.append((rel, n.op, json.dumps(n.attrs, sort_keys=True, default=str),
                     tuple(str(v.type) for v in n.outputs), tuple(ins)))
    return tuple(form)


def find_runs(tree: ScopeTree) -> list[Run]:
    """Runs of two or more consecutive identical siblings, anywhere in the tree."""
    runs = []
    for kids in tree.children.values():
        forms = [canonical_form(tree.nodes[k], k) for k in kids]
        start = 0
        for i in range(1, len(kids) + 1):
            if i == len(kids) or forms[i] != forms[start]:
                if i - start > 1:
                    runs.append(Run(tuple(kids[start:i])))
                start = i
    return runs


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
        runs = find_runs(tree)
        step: dict[int, Node] = {}
        copy_of: dict[int, list] = {}
        for r, run in enumerate(runs):
            shown = tree.nodes[run.members[0]]
            for c, member in enumerate(run.members):
                for i, n in enumerate(tree.nodes[member]):
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

    def hidden(self, path: Path) -> bool:
        """A copy that is not drawn (any of its ancestors or itself is a later copy)."""
        return any(path[: len(m)] == m for run in self.runs for m in run.members[1:])

    def crosses_copies(self, a: Node, b: Node) -> bool:
        """An edge from one copy of a run into another (layer_2 -> layer_3): folded away."""
        ca = dict(self.copy_of.get(id(a), ()))
        return any(ca.get(r, c) != c for r, c in self.copy_of.get(id(b), ()))
