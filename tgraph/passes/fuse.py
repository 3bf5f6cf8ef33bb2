"""Elementwise fusion: maximal chains of ops with a scalar formula become one ``fused`` node.

A group iterates over one output shape; its members all produce that shape, and its
inputs may broadcast into it (a bias, a per-row statistic, a scalar). Scalar constants
are inlined into the body. A sum or mean over the last axis (keepdims) of a member joins
too, as a trailing reduction computed in the same pass over each row (LayerNorm's
statistics and backward); no member reads it, since a row's sum is known only at its end. A node joins the group of one of its producers unless one of
its other inputs depends on that group (which would make the fused node a cycle), and a
gradient's node (autodiff tags it) joins no forward group: a gradient term computed from
forward values alone (Φ's derivative exp(−x²/2), say) then runs in the backward loop that
reads it, not in the forward one, which would write it out to be kept until then. A lone
cheap op (an add, a mul) of same-shaped arrays is left alone: one NumPy call is as good
as one loop there; a lone transcendental (GELU, its gradient, exp, tanh) or a lone op that
broadcasts an input (a bias add) is fused, to run multi-threaded.
"""

from __future__ import annotations

import heapq

from tgraph.ir import CONST, Graph, Node, Value

#: ops not worth a kernel of their own when nothing fuses with them
CHEAP = {"add", "sub", "mul", "div", "neg", "maximum", "compare", "where", "abs", "relu"}


def is_row_reduction(n: Node) -> bool:
    """sum/mean over the last axis only, keeping it: a trailing reduction of a group."""
    if n.op not in ("sum", "mean") or not n.attrs.get("keepdims") or not n.inputs:
        return False
    rank, axes = n.inputs[0].type.rank, n.attrs.get("axes")
    axes = [axes] if isinstance(axes, int) else axes
    return rank >= 1 and axes is not None and [a % rank for a in axes] == [rank - 1]


def _spreads(n: Node) -> bool:
    """Whether an input of ``n`` is broadcast along an axis (a bias): NumPy runs that a row
    at a time, on one core ([1024, 768] + [768]: 0.19 ms, a two-thread loop 0.08 ms)."""
    return any(v.type.rank >= 1 and tuple(v.shape) != tuple(n.output.shape) for v in n.inputs)


def fusible(n: Node) -> bool:
    from tgraph.ops.registry import get_op

    if len(n.outputs) != 1 or any(isinstance(d, str) and not d.isidentifier()
                                  for d in n.output.shape):
        return False
    args = [f"a{i}" for i in range(len(n.inputs))]
    return get_op(n.op).scalar(args, **n.attrs) is not None


def fuse_elementwise(graph: Graph) -> int:
    """Rewrite ``graph`` in place; returns how many nodes went into fused nodes."""
    group_of: dict[Node, int] = {}
    groups: list[list[Node]] = []
    depends: dict[Value, int] = {}  # value -> bitmask of groups it depends on
    producer = {v: n for n in graph.nodes for v in n.outputs}
    order = {n: i for i, n in enumerate(graph.nodes)}
    for n in graph.nodes:
        mask = 0
        for v in n.inputs:
            mask |= depends.get(v, 0)
        if is_row_reduction(n):
            gid = _join_reduction(n, group_of, groups, depends, producer)
        else:
            gid = _join(n, group_of, groups, depends, producer, order) if fusible(n) else None
        if gid is None and fusible(n):
            gid = len(groups)
            groups.append([])
        if gid is not None:
            groups[gid].append(n)
            group_of[n] = gid
            mask |= 1 << gid
        for v in n.outputs:
            depends[v] = mask
    fused = [g for g in groups if sum(not is_row_reduction(m) for m in g) > 1
             or (g and (g[0].op not in CHEAP or _spreads(g[0])))]
    if not fused:
        return 0
    _rewrite(graph, fused)
    return sum(map(len, fused))


def _join(n, group_of, groups, depends, producer, order) -> int | None:
    """The group ``n`` joins: a producer's, of the same shape, that none of n's other inputs
    depends on; other producers' groups merge into it where that makes no cycle either."""
    cands = []
    for v in n.inputs:
        gid = _member_group(v, group_of, producer)
        if gid is not None and gid not in cands and groups[gid][0].output.shape == n.output.shape \
                and _gradient(groups[gid][0]) == _gradient(n):
            cands.append(gid)
    chosen = None
    for gid in cands:
        if chosen is None:
            outside = [u for u in n.inputs if _member_group(u, group_of, producer) != gid]
            if not any(depends.get(u, 0) >> gid & 1 for u in outside):
                chosen = gid
        elif _can_merge(chosen, gid, n, group_of, groups, depends, producer):
            for m in groups[gid]:
                group_of[m] = chosen
            groups[chosen] = sorted(groups[chosen] + groups[gid], key=order.get)
            groups[gid] = []
            for v, mask in depends.items():
                if mask >> gid & 1:
                    depends[v] = mask | 1 << chosen
    return chosen


def _gradient(n: Node) -> bool:
    """Whether autodiff made ``n`` (a VJP's node, or a sum of fan-out gradients)."""
    return "forward" in n.meta or "sums" in n.meta


def _can_merge(a, b, n, group_of, groups, depends, producer) -> bool:
    """Whether groups a and b (and n, which reads both) can be one node: no value that
    either reads from outside depends on the other."""
    for gid, other in ((a, b), (b, a)):
        for m in groups[gid] + [n]:
            for u in m.inputs:
                if _member_group(u, group_of, producer) in (a, b):
                    continue
                if depends.get(u, 0) >> other & 1:
                    return False
    return True


def _member_group(v: Value, group_of, producer) -> int | None:
    """The group whose loop computes ``v`` per element (a trailing reduction's result is
    only known after the loop: for its group's members it is an outside input)."""
    p = producer.get(v)
    return None if p is None or is_row_reduction(p) else group_of.get(p)


def _join_reduction(n, group_of, groups, depends, producer) -> int | None:
    """A row reduction joins the group computing its input, iterating over that shape."""
    gid = _member_group(n.inputs[0], group_of, producer)
    if gid is not None and groups[gid][0].output.shape == n.inputs[0].shape:
        return gid
    return None


def _rewrite(graph: Graph, groups: list[list[Node]]) -> None:
    users = graph.users()
    outputs = set(graph.outputs.values())
    order = {n: i for i, n in enumerate(graph.nodes)}
    replaced: dict[Value, Value] = {}
    members: set[Node] = set()
    new_nodes: list[tuple[int, Node]] = []
    for group in groups:
        members.update(group)
        node, produced = _fused_node(graph, group, users, outputs)
        replaced.update(produced)
        new_nodes.append((order[group[-1]], node))
    kept = [(order[n], n) for n in graph.nodes if n not in members] + new_nodes
    for _, n in kept:
        n.inputs = [replaced.get(v, v) for v in n.inputs]
    for k, v in graph.outputs.items():
        graph.outputs[k] = replaced.get(v, v)
    graph.nodes = _toposort(kept)
    used = {id(v) for n in graph.nodes for v in n.inputs} | set(map(id, graph.outputs.values()))
    graph.consts = [c for c in graph.consts if id(c) in used]


def _fused_node(graph: Graph, group: list[Node], users, outputs):
    """The fused node for ``group`` and {old value: its output of the fused node}."""
    inside = set(group)
    inputs: list[Value] = []
    ref: dict[Value, int] = {}
    body = []

    def arg(v: Value):
        if v in ref:
            return ref[v]
        if v.kind == CONST and v.shape == () and v.data is not None:
            return {"value": v.data.item(), "dtype": v.dtype}
        inputs.append(v)
        ref[v] = len(inputs) - 1
        return ref[v]

    for n in group:  # inputs first, so refs to them are 0..k-1
        for v in n.inputs:
            if v.node not in inside:
                arg(v)
    for n in group:
        body.append({"op": n.op, "args": [arg(v) for v in n.inputs], "attrs": dict(n.attrs)})
        ref[n.output] = len(inputs) + len(body) - 1
    escaping = [n.output for n in group
                if n.output in outputs or any(u not in inside for u in users.get(n.output, ()))]
    with graph.scope(common_scope(n.scope for n in group)):
        made = graph.apply("fused", inputs, {"body": body, "outputs": [ref[v] for v in escaping]},
                           name="fused")
    outs = [made] if isinstance(made, Value) else list(made)
    node = graph.nodes.pop()  # placed by _toposort instead
    node.meta["fused"] = [n.name for n in group]
    return node, dict(zip(escaping, outs))


def expand_fused(graph: Graph) -> Graph:
    """A copy of ``graph`` for drawing: each fused node's body as ops again, inside a scope
    named by the chain (``fused 1: + → GELU``), so a diagram's depth opens and closes it
    like any block. The graph itself, without fused nodes, is returned as it is."""
    if not any(n.op == "fused" for n in graph.nodes):
        return graph
    from collections import Counter

    from tgraph.io import copy_graph
    from tgraph.ops.registry import get_op

    g = copy_graph(graph)
    nodes: list[Node] = []
    replaced: dict[Value, Value] = {}
    count: Counter = Counter()
    for n in list(g.nodes):
        if n.op != "fused":
            n.inputs = [replaced.get(v, v) for v in n.inputs]
            nodes.append(n)
            continue
        count[n.scope] += 1
        chain = " → ".join(get_op(e["op"]).label(**e.get("attrs", {})) for e in n.attrs["body"])
        title = f"fused {count[n.scope]}: {chain}".replace("/", "÷")
        start, env = len(g.nodes), [replaced.get(v, v) for v in n.inputs]
        with g.scope(n.scope), g.scope(title):
            for e in n.attrs["body"]:
                args = [g.const(a["value"], "scalar", a["dtype"]) if isinstance(a, dict)
                        else env[a] for a in e.get("args", ())]
                env.append(g.apply(e["op"], args, e.get("attrs", {})))
        nodes += g.nodes[start:]
        replaced.update((v, env[ref]) for v, ref in zip(n.outputs, n.attrs["outputs"]))
    g.nodes = nodes
    g.outputs = {k: replaced.get(v, v) for k, v in g.outputs.items()}
    return g.validate()


def common_scope(scopes) -> str:
    """The deepest scope holding all of ``scopes``: a chain that crosses from a forward block
    into the backward pass belongs to neither, so its box sits where both are drawn."""
    common = []
    for parts in zip(*(s.split("/") if s else [] for s in scopes)):
        if len(set(parts)) != 1:
            break
        common.append(parts[0])
    return "/".join(common)


def _toposort(items: list[tuple[int, Node]]) -> list[Node]:
    """Nodes in an order where every input is defined first, closest to ``items``' keys."""
    producer = {v: n for _, n in items for v in n.outputs}
    key = {n: k for k, n in items}
    waiting = {n: {producer[v] for v in n.inputs if v in producer} for _, n in items}
    readers: dict[Node, list[Node]] = {}
    for n, deps in waiting.items():
        for d in deps:
            readers.setdefault(d, []).append(n)
    ready = [(key[n], i, n) for i, (_, n) in enumerate(items) if not waiting[n]]
    heapq.heapify(ready)
    out = []
    counter = len(items)
    while ready:
        _, _, n = heapq.heappop(ready)
        out.append(n)
        for r in readers.get(n, ()):
            waiting[r].discard(n)
            if not waiting[r]:
                counter += 1
                heapq.heappush(ready, (key[r], counter, r))
    return out
