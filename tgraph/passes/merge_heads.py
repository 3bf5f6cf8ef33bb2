"""merge_heads: rewrite attention drawn head by head into one batched path.

The diagram graph keeps each head its own Q/K/V matmuls and softmax (scopes
``.../head_0`` … ``.../head_{H-1}``) so a student can follow one head; this pass turns
that readable graph into the fast one: the H identical head subgraphs feeding one concat
become a single subgraph over a head axis, as ``jax.vmap`` would batch them.

Layout rule: a per-head value, padded to rank ≥ 2, gets the head axis inserted third
from the right ([B, T, d] → [B, H, T, d]; a bias [d] → [H, 1, d]; a scalar → [H, 1, 1]).
With the head axis always at −3, right-aligned broadcasting and batched matmul work
unchanged, and values from outside the heads only need a size-1 head axis. Each head's
weights are stacked by graph ops at run time, so the merged graph reads the same weights
file. A group whose ops or shapes fall outside these rules is left as it is.
"""

from __future__ import annotations

import re

import numpy as np

from tgraph import builder as tb
from tgraph.ir import CONST, PARAM, Graph, Node, Value
from tgraph.types import TensorType

HEAD = re.compile(r"^(.*)/head_(\d+)(/|$)")
#: ops whose batched form is the op itself: they broadcast or act on the last two axes
SAME_OP = {"add", "sub", "mul", "div", "pow", "maximum", "neg", "exp", "log", "sqrt", "rsqrt",
           "tanh", "sin", "cos", "abs", "relu", "sigmoid", "erf", "ndtr", "gelu", "where",
           "cast", "compare", "matmul", "mask"}
#: ops with one axis attr to move past the head axis
AXIS_ATTR = {"softmax": "axis", "concat": "axis", "split": "axis", "slice": "axis"}


class NotMergeable(Exception):
    """This group of heads does not fit the batching rules: leave it as drawn."""


def merge_heads(graph: Graph) -> tuple[Graph, int]:
    """A new graph with every mergeable group of heads batched; and how many groups.

    Groups are checked on the graph as given (one group's heads never hold another's), then
    all are emitted in one copy of the graph."""
    plans, within = {}, _nodes_by_scope(graph)
    users = graph.users()
    for node in graph.nodes:
        group = _group(graph, node)
        if group:
            try:
                plans[id(node)] = _plan(within, users, *group)
            except NotMergeable:
                pass
    while plans:
        try:
            return _replay(graph, plans), len(plans)
        except NotMergeable as e:  # found only while emitting the batched ops: drop it
            del plans[e.args[0]]
    return graph, 0


def _group(graph: Graph, node: Node):
    """(concat node, head scopes in order) when node concatenates H ≥ 2 heads' outputs."""
    if node.op != "concat" or len(node.inputs) < 2 or any(v.node is None for v in node.inputs):
        return None
    matches = [HEAD.match(v.node.scope) for v in node.inputs]
    if not all(matches) or len({m.group(1) for m in matches}) != 1:
        return None
    idx = [int(m.group(2)) for m in matches]
    if idx != list(range(len(idx))):
        return None
    return node, [f"{matches[0].group(1)}/head_{i}" for i in idx]


def _nodes_by_scope(graph: Graph) -> dict[str, list[Node]]:
    """Every scope path -> the nodes inside it or below it, in graph order."""
    within: dict[str, list[Node]] = {}
    for n in graph.nodes:
        parts = n.scope.split("/") if n.scope else []
        for i in range(1, len(parts) + 1):
            within.setdefault("/".join(parts[:i]), []).append(n)
    return within


def _plan(within, users, concat: Node, heads: list[str]) -> tuple[list, dict]:
    """(each head's nodes, per-head leaves by template position), or NotMergeable."""
    per_head = [within.get(s, []) for s in heads]
    template = per_head[0]
    if any(len(p) != len(template) for p in per_head):
        raise NotMergeable
    inside = {id(v) for p in per_head for n in p for v in n.outputs}
    position = {id(v): (j, k) for p in per_head for j, n in enumerate(p)
                for k, v in enumerate(n.outputs)}
    # the same op, attrs and types at every position; inputs either shared from outside,
    # the same position inside, or per-head leaves (weights, constants) of one type
    leaves: dict[tuple[int, int], list[Value]] = {}
    for j, n0 in enumerate(template):
        for p in per_head[1:]:
            n = p[j]
            if (n.op, n.attrs, [v.type for v in n.outputs]) != \
                    (n0.op, n0.attrs, [v.type for v in n0.outputs]) or \
                    len(n.inputs) != len(n0.inputs):
                raise NotMergeable
        for i, v0 in enumerate(n0.inputs):
            column = [p[j].inputs[i] for p in per_head]
            if id(v0) in inside:
                if any(position.get(id(v)) != position[id(v0)] for v in column):
                    raise NotMergeable
            elif all(v is v0 for v in column) or all(
                    v.kind == CONST and v.type == v0.type and np.array_equal(v.data, v0.data)
                    for v in column):
                continue  # shared, or equal constants such as 1/√d_k: use head 0's
            elif all(v.kind in (PARAM, CONST) and v.type == v0.type for v in column):
                leaves[(j, i)] = column
            else:
                raise NotMergeable
    for p, out in zip(per_head, concat.inputs):
        members = set(map(id, p))
        if id(out.node) not in members:
            raise NotMergeable
        for n in p:  # a head's values feed only its own nodes, and its output the concat
            for v in n.outputs:
                if any(id(u) not in members and not (u is concat and v is out)
                       for u in users[v]):
                    raise NotMergeable
    return per_head, leaves


def _replay(graph: Graph, plans: dict) -> Graph:
    """Copy the graph, emitting each group's batched heads where its concat stood."""
    g = Graph(graph.name, graph.meta)
    new: dict[int, Value] = {}
    for v in graph.inputs:
        new[id(v)] = g.input(v.name, v.shape, v.dtype)
    for v in graph.params:
        p = g._leaf(v.name, v.type, PARAM, init=v.init)
        g.params.append(p)
        new[id(v)] = p
    for v in graph.consts:
        c = g._leaf(v.name, v.type, CONST, data=v.data)
        g.consts.append(c)
        new[id(v)] = c
    skip = {id(n) for per_head, _ in plans.values() for p in per_head for n in p}
    for n in graph.nodes:
        if id(n) in skip:
            continue
        if id(n) in plans:
            try:
                new[id(n.output)] = _batched(g, n, *plans[id(n)], new)
            except NotMergeable:
                raise NotMergeable(id(n)) from None
            continue
        with g.scope(n.scope):
            res = g.apply(n.op, [new[id(v)] for v in n.inputs], n.attrs,
                          name=n.name.rsplit("/", 1)[-1])
        for v, r in zip(n.outputs, res if isinstance(res, tuple) else (res,)):
            new[id(v)] = r
        g.nodes[-1].meta = dict(n.meta)
    for k, v in graph.outputs.items():
        g.set_output(k, new[id(v)])
    return g


def _batched_type(t: TensorType, h: int) -> tuple:
    shape = (1,) * max(0, 2 - t.rank) + tuple(t.shape)
    return (*shape[:-2], h, *shape[-2:])


def _lift(v: Value) -> Value:
    """An outside value in the batched layout with one head: size-1 axis at −3."""
    if v.type.rank < 2:
        return v
    shape = list(v.shape)
    return tb.reshape(v, [*shape[:-2], 1, *shape[-2:]])


def _stack(g: Graph, column: list[Value]) -> Value:
    shape = _batched_type(column[0].type, 1)
    if column[0].kind == CONST:
        return g.const(np.concatenate([np.reshape(v.data, shape) for v in column], axis=-3),
                       name="stacked", dtype=column[0].dtype)
    return tb.concat(*[tb.reshape(v, shape) for v in column], axis=-3)


def _is_projection(n: Node, j: int, leaves, local) -> bool:
    """x @ W_h with x from outside the heads and one weight matrix per head."""
    return (n.op == "matmul" and (j, 1) in leaves and id(n.inputs[0]) not in local
            and n.inputs[1].type.rank == 2 and n.inputs[0].type.rank >= 2)


def _projection(x: Value, weights: list[Value]) -> Value:
    """All heads' x @ W_h as one GEMM with the weights side by side, [..., T, H·d], then
    [..., H, T, d]: the layout the batched model builds directly."""
    y = x @ tb.concat(*weights, axis=-1)
    y = tb.reshape(y, [*y.shape[:-1], len(weights), weights[0].shape[-1]])
    r = y.type.rank
    return tb.transpose(y, [*range(r - 3), r - 2, r - 3, r - 1])


def _axis(a: int, rank: int) -> int:
    """A per-head axis in the batched layout (head at −3 of the rank-≥2 padded shape)."""
    if rank < 2:
        raise NotMergeable
    a = a % rank
    return a if a < rank - 2 else a + 1


def _batched(g: Graph, concat: Node, per_head, leaves, new) -> Value:
    h, template = len(per_head), per_head[0]
    scope = concat.scope
    local: dict[int, Value] = {}
    with g.scope(f"{scope}/heads" if scope else "heads"):
        for j, n in enumerate(template):
            if _is_projection(n, j, leaves, local):
                local[id(n.output)] = _projection(new[id(n.inputs[0])],
                                                  [new[id(w)] for w in leaves[(j, 1)]])
                continue
            ins = []
            for i, v in enumerate(n.inputs):
                if (j, i) in leaves:
                    ins.append(_stack(g, [new[id(x)] for x in leaves[(j, i)]]))
                elif id(v) in local:
                    ins.append(local[id(v)])
                else:
                    ins.append(_lift(new[id(v)]))
            attrs = dict(n.attrs)
            rank = n.inputs[0].type.rank if n.inputs else 0
            if n.op in AXIS_ATTR:
                attrs[AXIS_ATTR[n.op]] = _axis(attrs[AXIS_ATTR[n.op]], rank)
            elif n.op == "transpose":
                perm = [_axis(p, rank) for p in attrs["perm"]]
                attrs["perm"] = [*perm[:rank - 2], rank - 2, *perm[rank - 2:]]
            elif n.op in ("sum", "mean", "max") and attrs.get("keepdims") and \
                    attrs.get("axes") is not None:
                attrs["axes"] = [_axis(a, rank) for a in attrs["axes"]]
            elif n.op not in SAME_OP:
                raise NotMergeable
            try:
                res = g.apply(n.op, ins, attrs)
            except Exception as e:
                raise NotMergeable from e
            for v, r in zip(n.outputs, res if isinstance(res, tuple) else (res,)):
                if r.shape != _batched_type(v.type, h) or r.dtype != v.dtype:
                    raise NotMergeable
                local[id(v)] = r
        out = local[id(concat.inputs[0])]
        if concat.attrs["axis"] % concat.output.type.rank != concat.output.type.rank - 1:
            raise NotMergeable
        # [..., H, T, d] -> [..., T, H, d] -> [..., T, H·d]: head-major, like the concat
        r = out.type.rank
        moved = tb.transpose(out, [*range(r - 3), r - 2, r - 3, r - 1])
        return tb.reshape(moved, [*moved.shape[:-2], -1])
