"""Scopes as a tree of nested boxes, and which of them a depth limit collapses.

A node's scope ``decoder/layer_3/attn/head_5`` is a path of nested boxes. At depth N a
scope with more than N parts is drawn inside its ancestor of N parts, collapsed into one
box; depth 0 is the whole model as one box. Backward nodes (scope ``backward/...``) mirror
the forward scopes one level down, so the ``backward`` prefix does not count as a level:
depth 2 collapses ``backward/decoder/layer_3`` just as it collapses ``decoder/layer_3``.
"""

from __future__ import annotations

import weakref
from collections import defaultdict
from dataclasses import dataclass, field

from tgraph.ir import Graph, Node

BACKWARD = "backward"

Path = tuple[str, ...]


def split_scope(scope: str) -> Path:
    return tuple(p for p in scope.split("/") if p)


def is_backward(path: Path) -> bool:
    return bool(path) and path[0] == BACKWARD


def level(path: Path) -> int:
    """How deep a scope is for the depth limit (the backward prefix is not a level)."""
    return len(path) - is_backward(path)


# Scopes of detail a reader rarely needs (the sinusoidal table's sin/cos/reshape/concat):
# one box at every depth unless asked for by name (render(expand=...), --expand).
DETAIL_SCOPES = frozenset({"positions"})


def collapsed_at(path: Path, depth: int | None,
                 closed: frozenset[str] = DETAIL_SCOPES) -> Path | None:
    """The box a node in scope ``path`` collapses into at ``depth``, or None when the
    node is drawn as a primitive. A scope named in ``closed`` is one box at any depth."""
    for i, part in enumerate(path):
        if part in closed and (depth is None or level(path[: i + 1]) <= depth):
            return path[: i + 1]
    if depth is None or level(path) < depth:
        return None
    return path[: depth + is_backward(path)]


@dataclass
class ScopeTree:
    """Every scope path with the nodes inside it (its whole subtree, in graph order) and
    its direct children in order of first appearance."""

    nodes: dict[Path, list[Node]] = field(default_factory=lambda: defaultdict(list))
    children: dict[Path, list[Path]] = field(default_factory=lambda: defaultdict(list))

    @classmethod
    def of(cls, graph: Graph) -> ScopeTree:
        """The tree of ``graph``'s scopes; the same object again while the graph's nodes,
        scopes and wiring are unchanged (a page draws one graph at many depths, and what
        is derived from the tree, its folded runs, is kept on it)."""
        key = tuple((id(n), n.scope, tuple(map(id, n.inputs))) for n in graph.nodes)
        hit = _TREES.get(graph)
        if hit is not None and hit[0] == key:
            return hit[1]
        tree = cls()
        for n in graph.nodes:
            path = split_scope(n.scope)
            for i in range(len(path) + 1):
                prefix = path[:i]
                if i and prefix not in tree.nodes:
                    tree.children[prefix[:-1]].append(prefix)
                tree.nodes[prefix].append(n)
        _TREES[graph] = (key, tree)
        return tree


_TREES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

