"""Dead-code elimination, common-subexpression elimination and constant folding."""

from __future__ import annotations

import json

import numpy as np

from tgraph.ir import CONST, Graph, Node, Value


def dce(graph: Graph) -> int:
    """Drop nodes and constants no graph output depends on."""
    needed = set(map(id, graph.outputs.values()))
    kept = []
    for n in reversed(graph.nodes):
        if any(id(v) in needed for v in n.outputs):
            kept.append(n)
            needed.update(id(v) for v in n.inputs)
    removed = len(graph.nodes) - len(kept)
    graph.nodes = kept[::-1]
    graph.consts = [c for c in graph.consts if id(c) in needed]
    return removed


def replace_values(graph: Graph, same: dict[Value, Value]) -> None:
    """Every use of a key of ``same`` (node inputs, graph outputs) reads its value instead,
    in one sweep."""
    for n in graph.nodes:
        n.inputs = [same.get(v, v) for v in n.inputs]
    graph.outputs = {k: same.get(v, v) for k, v in graph.outputs.items()}


def move_before(graph: Graph, nodes: list[Node], anchor: Node) -> None:
    """Put ``nodes``, in this order, right before ``anchor`` in the schedule (a pass that
    appended them with ``graph.apply``, or moves nodes it rewired)."""
    moving = set(map(id, nodes))
    kept = [n for n in graph.nodes if id(n) not in moving]
    at = kept.index(anchor)
    graph.nodes = [*kept[:at], *nodes, *kept[at:]]


def cse(graph: Graph) -> int:
    """Merge nodes computing the same op with the same attrs on the same inputs, and
    constants holding equal data."""
    canon: dict = {}
    same: dict[Value, Value] = {}  # merged value -> the one kept, applied in one sweep
    for c in graph.consts:
        key = ("const", c.dtype, c.data.shape, c.data.tobytes())
        if key in canon:
            same[c] = canon[key]
        else:
            canon[key] = c
    for n in graph.nodes:
        n.inputs = [same.get(v, v) for v in n.inputs]  # earlier merges first: chains merge too
        key = (n.op, tuple(map(id, n.inputs)), json.dumps(n.attrs, sort_keys=True))
        if key in canon:
            same.update(zip(n.outputs, canon[key].outputs))
        else:
            canon[key] = n
    for k, v in graph.outputs.items():
        graph.outputs[k] = same.get(v, v)
    if same:
        dce(graph)
    return len({id(v.node) if v.node is not None else id(v) for v in same})


def fold_constants(graph: Graph, max_elements: int = 1 << 16) -> int:
    """Evaluate nodes whose inputs are all constants (small results only) at compile time."""
    from tgraph.ops.registry import get_op

    folded = 0
    for n in list(graph.nodes):
        if not n.inputs or any(v.kind != CONST for v in n.inputs) or len(n.outputs) != 1:
            continue
        out = n.outputs[0]
        if any(isinstance(d, str) for d in out.shape) or np.prod(out.shape) > max_elements:
            continue
        data = np.asarray(get_op(n.op).kernel(np, *[v.data for v in n.inputs], **n.attrs))
        const = Value(out.name, out.type, CONST, graph=graph, data=data.astype(out.dtype))
        graph.consts.append(const)
        graph.nodes.remove(n)
        replace_values(graph, {out: const})
        folded += 1
    if folded:
        dce(graph)
    return folded
