"""What is done to LayerNorm's gradient dx, done in its row loop (-O2).

- residual_into_norm_grad: a pre-norm block computes x + f(LayerNorm(x)), so the gradient
  of x is the gradient coming around the block plus LayerNorm's dx: ``add(r,
  layernorm_grad(x, γ, g)[0])``. The row loop that writes dx adds r as it goes
  (layernorm_grad's optional fourth input), where the add read both [B, T, D] arrays again
  and wrote a third on one core: GPT config M has eight such adds a training step.
- sums_into_norm_grad: the bias of the product before the block gets dx summed over the
  leading axes; the row loop adds that up beside dγ and dβ (``sum_dx``), where NumPy read
  dx again on one core: eight more passes over [B, T, D] in GPT config M's step.
"""

from __future__ import annotations

from tgraph import builder as tb
from tgraph.ir import Graph, Node
from tgraph.ops.reduce import reduced_axes
from tgraph.passes.simplify import adds_taking


def residual_into_norm_grad(graph: Graph) -> int:
    """Rewrite ``graph`` in place; returns how many adds were folded in."""
    users = graph.users()
    position = {n: i for i, n in enumerate(graph.nodes)}
    moved: dict[Node, Node] = {}  # add -> the layernorm_grad that takes its place
    for n, dx, residual in adds_taking(graph, "layernorm_grad"):
        norm = dx.node
        if (n in moved or len(norm.inputs) != 3 or dx is not norm.outputs[0]
                or norm in moved.values()):
            continue
        # the node moves to the add's place: none of its other results may be read before
        if any(position[u] < position[n] for v in norm.outputs[1:] for u in users[v]):
            continue
        norm.inputs = [*norm.inputs, residual]
        moved[n] = norm
    if not moved:
        return 0
    replaced = {add.output: norm.outputs[0] for add, norm in moved.items()}
    kept = []
    for n in graph.nodes:
        if n in moved.values():
            continue
        n = moved.get(n, n)
        n.inputs = [replaced.get(v, v) for v in n.inputs]
        kept.append(n)
    graph.nodes = kept
    graph.outputs = {k: replaced.get(v, v) for k, v in graph.outputs.items()}
    return len(moved)


def sums_into_norm_grad(graph: Graph) -> int:
    """Rewrite ``graph`` in place; returns how many sums over dx's leading axes became
    layernorm_grad's fourth result."""
    summed: dict[Node, Node] = {}  # layernorm_grad -> the sum of its dx
    for n in graph.nodes:
        norm = n.inputs[0].node if n.op == "sum" else None
        if (norm is not None and norm.op == "layernorm_grad" and n.inputs[0] is norm.outputs[0]
                and not norm.attrs.get("sum_dx") and norm not in summed
                and reduced_axes(n.inputs[0].type.rank, n.attrs.get("axes"))
                == tuple(range(n.inputs[0].type.rank - 1))):
            summed[norm] = n
    if not summed:
        return 0
    users = graph.users()
    outputs = set(map(id, graph.outputs.values()))
    sums = set(summed.values())
    # a kept-dims sum reshaped back to [D] (a bias's gradient): that is the fourth result
    unshaped = {r: s for s in sums for r in users[s.output]
                if r.op == "reshape" and r.output.shape == s.inputs[0].shape[-1:]}
    replaced: dict = {}
    totals: dict = {}  # sum -> the fourth result
    kept: list[Node] = []
    for n in graph.nodes:
        n.inputs = [replaced.get(v, v) for v in n.inputs]
        if n in summed:  # the same node, with dx's sum as a fourth result
            with graph.scope(n.scope):
                outs = graph.apply("layernorm_grad", n.inputs, {**n.attrs, "sum_dx": True},
                                   name="layernorm_grad")
            kept.append(graph.nodes.pop())
            replaced.update(zip(n.outputs, outs))
            replaced[summed[n].output] = totals[summed[n]] = outs[3]
        elif n in unshaped:
            replaced[n.output] = totals[unshaped[n]]
        elif n in sums:
            total = totals[n]
            others = id(n.output) in outputs or any(r not in unshaped for r in users[n.output])
            if n.attrs.get("keepdims") and others:  # dx's sum in the sum's own shape
                with graph.scope(n.scope):
                    replaced[n.output] = tb.reshape(total, list(n.output.shape))
                kept.append(graph.nodes.pop())
        else:
            kept.append(n)
    graph.nodes = kept
    graph.outputs = {k: replaced.get(v, v) for k, v in graph.outputs.items()}
    return len(summed)
