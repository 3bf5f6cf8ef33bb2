"""A residual connection's gradient added inside LayerNorm's gradient (-O2).

A pre-norm block computes x + f(LayerNorm(x)), so the gradient of x is the gradient coming
around the block plus LayerNorm's dx: ``add(r, layernorm_grad(x, γ, g)[0])``. The row loop
that writes dx adds r as it goes (layernorm_grad's optional fourth input), where the add
read both [B, T, D] arrays again and wrote a third on one core: GPT config M has eight
such adds a training step.
"""

from __future__ import annotations

from tgraph.ir import Graph, Node


def residual_into_norm_grad(graph: Graph) -> int:
    """Rewrite ``graph`` in place; returns how many adds were folded in."""
    users = graph.users()
    outputs = set(map(id, graph.outputs.values()))
    position = {n: i for i, n in enumerate(graph.nodes)}
    moved: dict[Node, Node] = {}  # add -> the layernorm_grad that takes its place
    for n in graph.nodes:
        if n.op != "add":
            continue
        for k in (0, 1):
            dx, residual = n.inputs[k], n.inputs[1 - k]
            norm = dx.node
            if (norm is None or norm.op != "layernorm_grad" or len(norm.inputs) != 3
                    or dx is not norm.outputs[0] or users[dx] != [n] or id(dx) in outputs
                    or residual.type != dx.type or norm in moved.values()):
                continue
            # the node moves to the add's place: none of its other results may be read
            # before there
            if any(position[u] < position[n] for v in norm.outputs[1:] for u in users[v]):
                continue
            norm.inputs = [*norm.inputs, residual]
            moved[n] = norm
            break
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
