"""Dead-code elimination, common-subexpression elimination and constant folding."""

from __future__ import annotations

import json
from collections.abc import Iterator

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


def adds_taking(graph: Graph, op: str) -> Iterator[tuple[Node, Value, Value]]:
    """(add, operand, other operand) for each operand of an add that an ``op`` node makes
    and only that add reads, not an output of the graph, of the other operand's type: an
    add the ``op`` node could do itself (both operands of an add may be offered)."""
    users = graph.users()
    outputs = set(map(id, graph.outputs.values()))
    for n in list(graph.nodes):
        if n.op != "add":
            continue
        for k in (0, 1):
            v, other = n.inputs[k], n.inputs[1 - k]
            if (v.node is not None and v.node.op == op and users[v] == [n]
                    and id(v) not in outputs and other.type == v.type):
                yield n, v, other


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


def fold_layout(graph: Graph) -> int:
    """Shorten chains of reshapes and transposes, as merge_heads and bias_before_heads leave
    them on the heads' biases (each [d] reshaped to [1, 1, d], concatenated to [H, 1, d],
    then reshaped, transposed and reshaped to [H·d]: twelve nodes for what one concat of
    the H biases gives). Rules, in one sweep in schedule order:

    - a transpose that only moves size-1 axes is a reshape;
    - a reshape of a reshape reads the first one's input; a reshape to its input's shape
      is that input;
    - a concat along an axis with only 1s before it, of reshaped vectors, is a reshape of
      the vectors' concat (row-major order is the same);
    - a concat's input that is a concat along the same axis, read by nothing else, gives
      its pieces instead (merged heads' per-head weights, then merged projections: one
      copy of the pieces, not two).

    Rewrites ``graph`` in place; returns how many nodes changed."""
    outputs = set(map(id, graph.outputs.values()))
    users = graph.users()
    same: dict[Value, Value] = {}
    nodes: list[Node] = []
    changed = 0
    for n in list(graph.nodes):
        n.inputs = [same.get(v, v) for v in n.inputs]
        if n.op == "concat":
            pieces = _inner_concat_pieces(n, users, outputs)
            changed += len(pieces) != len(n.inputs)
            n.inputs = pieces
        if n.op == "transpose" and _moves_unit_axes_only(n):
            n.op, n.attrs = "reshape", {"shape": list(n.output.shape)}
            changed += 1
        vectors = _reshaped_vectors(n) if n.op == "concat" else None
        if vectors:
            with graph.scope(n.scope):
                flat = graph.apply("concat", vectors, {"axis": 0}, name="concat")
            nodes.append(graph.nodes.pop())
            n.op, n.attrs, n.inputs = "reshape", {"shape": list(n.output.shape)}, [flat]
            changed += 1
        if n.op == "reshape":
            source = n.inputs[0].node
            if source is not None and source.op == "reshape":
                n.inputs = [source.inputs[0]]
                changed += 1
            x = n.inputs[0]
            if tuple(x.shape) == tuple(n.output.shape) and id(n.output) not in outputs:
                same[n.output] = x
                changed += 1
        nodes.append(n)
    graph.nodes = nodes
    if changed:
        replace_values(graph, same)
        dce(graph)
    return changed


def _moves_unit_axes_only(n: Node) -> bool:
    shape = n.inputs[0].shape
    perm = n.attrs.get("perm") or list(range(len(shape)))[::-1]
    moved = [p for p in perm if shape[p] != 1]
    return moved == sorted(moved)


def _inner_concat_pieces(n: Node, users, outputs) -> list[Value]:
    """A concat's inputs with each inner concat along the same axis, read by this concat
    only, replaced by its own inputs."""
    axis = n.attrs["axis"] % n.output.type.rank
    pieces = []
    for v in n.inputs:
        inner = v.node
        if (inner is not None and inner.op == "concat" and users.get(v) == [n]
                and id(v) not in outputs and inner.attrs["axis"] % v.type.rank == axis):
            pieces.extend(inner.inputs)
        else:
            pieces.append(v)
    return pieces


def _reshaped_vectors(n: Node) -> list[Value] | None:
    """The vectors a concat's inputs reshape, when the concat is their concat reshaped."""
    shape = n.output.shape
    axis = n.attrs["axis"] % len(shape)
    sources = [v.node.inputs[0] if v.node is not None and v.node.op == "reshape" else None
               for v in n.inputs]
    if (any(d != 1 for d in shape[:axis]) or any(s is None or s.type.rank != 1 for s in sources)
            or len(sources) < 2):
        return None
    return sources
