"""Attention's scale, mask and softmax as one op (-O2).

``softmax(mask(s, causal, window), axis=-1)``, where nothing else reads the masked scores,
becomes ``masked_softmax(s, causal, window)``: one pass over each row instead of writing a
−inf copy of the scores and exponentiating it (GPT config M's forward: the four attention
softmaxes and masks took 10 ms of 86); an s = x · c (the 1/√d scale, a constant scalar)
that nothing else reads goes in too, as ``scale=c``. In the backward, the mask (fill 0) that
the mask op's gradient puts after ``softmax_grad(y, g)`` goes too: y is exactly 0 at the
masked keys, so y·(g − Σ g·y) already is, for any finite g.

Then ``matmul(masked_softmax(matmul(q, kᵀ)), v)`` whose scores and weights nothing else
reads becomes ``attention(q, k, v)``, computed a (batch, head) at a time with the weights kept
in cache (tgraph/codegen/attention.py). A forward about to be differentiated
(``training_graph``) gets the op that also returns the weights: its attention_grad reads them
(GPT config M, one layer's gradient: 2.4 ms computing them again, 1.7 ms reading them).
"""

from __future__ import annotations

import math

from tgraph.ir import CONST, Graph, Node, Value
from tgraph.passes.layout import swaps_last_axes
from tgraph.passes.simplify import dce, move_before, replace_values


def fuse_masked_softmax(graph: Graph) -> int:
    """Rewrite ``graph`` in place; returns how many masks were folded into softmaxes."""
    users = graph.users()
    outputs = set(map(id, graph.outputs.values()))
    fused: dict[int, tuple] = {}  # id(masked_softmax output) -> its pattern
    same: dict[Value, Value] = {}  # a dropped mask's output -> its input
    folded = 0
    for n in graph.nodes:
        src = n.inputs[0].node if n.inputs else None
        if n.op == "softmax" and _last_axis(n) and _plain_mask(src, "-inf") \
                and users[n.inputs[0]] == [n] and id(n.inputs[0]) not in outputs:
            n.op, n.inputs = "masked_softmax", list(src.inputs)
            n.attrs = {k: src.attrs[k] for k in ("causal", "window") if k in src.attrs}
            scaled = _scaled(n.inputs[0])
            if scaled is not None and users[n.inputs[0]] == [src] \
                    and id(n.inputs[0]) not in outputs:
                n.inputs, n.attrs["scale"] = [scaled[0]], scaled[1]
            fused[id(n.output)] = _pattern(n)
            folded += 1
        elif n.op == "mask" and _plain_mask(n, "0") and src is not None \
                and src.op == "softmax_grad" and _last_axis(src) \
                and fused.get(id(src.inputs[0])) == _pattern(n):
            same[n.output] = n.inputs[0]
            folded += 1
    if same:
        replace_values(graph, same)
    if folded:
        dce(graph)
    return folded


def fuse_attention(graph: Graph, keep_weights: bool = False) -> int:
    """``matmul(masked_softmax(matmul(q, kᵀ)), v)``, where the scores and the weights have no
    other reader, becomes ``attention(q, k, v)``; returns how many. ``keep_weights``: the
    op also returns the weights (a forward graph about to be differentiated: its
    attention_grad then reads them instead of computing them again)."""
    users = graph.users()
    outputs = set(map(id, graph.outputs.values()))
    folded = 0
    same: dict[Value, Value] = {}
    for n in list(graph.nodes):
        weights = n.inputs[0].node if n.op == "matmul" else None
        scores = weights.inputs[0].node if weights is not None and weights.op == "masked_softmax" \
            else None
        if scores is None or scores.op != "matmul" or not swaps_last_axes(scores.inputs[1].node):
            continue
        q, k, v = scores.inputs[0], scores.inputs[1].node.inputs[0], n.inputs[1]
        if (users[weights.output] != [n] or users[scores.output] != [weights]
                or {id(weights.output), id(scores.output)} & outputs
                or not q.type.rank == k.type.rank == v.type.rank
                or not q.shape[:-2] == k.shape[:-2] == v.shape[:-2]):
            continue
        folded += 1
        if not keep_weights:
            n.op, n.inputs, n.attrs = "attention", [q, k, v], dict(weights.attrs)
            continue
        with graph.scope(n.scope):
            out, _ = graph.apply("attention", [q, k, v], {**weights.attrs, "weights": True})
        out.node.meta = dict(n.meta)
        move_before(graph, [out.node], n)
        same[n.output] = out
    if folded:
        replace_values(graph, same)
        dce(graph)
    return folded


def _scaled(v: Value) -> tuple[Value, float] | None:
    """(x, c) when ``v`` is x · c for a constant scalar c > 0 (attention's 1/√d)."""
    n = v.node
    if n is None or n.op != "mul":
        return None
    for x, c in (n.inputs, n.inputs[::-1]):
        if c.kind == CONST and c.data is not None and c.data.size == 1 and x.type == v.type:
            factor = float(c.data.reshape(-1)[0])
            if math.isfinite(factor) and factor > 0:
                return x, factor
    return None


def _plain_mask(n: Node | None, fill: str) -> bool:
    """A mask by pattern only (no keep input), filling with ``fill``."""
    return (n is not None and n.op == "mask" and len(n.inputs) == 1
            and float(n.attrs.get("fill", "-inf")) == float(fill)
            and bool(n.attrs.get("causal") or n.attrs.get("window")))


def _pattern(n: Node) -> tuple[bool, int]:
    return bool(n.attrs.get("causal", False)), int(n.attrs.get("window", 0))


def _last_axis(n: Node) -> bool:
    rank = n.inputs[0].type.rank
    return n.attrs.get("axis", -1) % rank == rank - 1
