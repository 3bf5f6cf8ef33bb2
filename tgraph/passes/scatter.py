"""A tied embedding's gradient summed in place (-O2).

The token table of a GPT with tied embeddings gets two gradients: the head's, dense
[V, D], and the lookup's, ``scatter_add`` of B·T rows into zeros [V, D]; autodiff adds
them. For gpt2-small that is two 154 MB arrays written and read for 128 nonzero rows.
``add(dense, scatter_add(u, i))``, where nothing else reads the scatter, becomes
``scatter_add(u, i, base=dense)``: the rows are added onto the dense gradient, in place
when it dies there (the executor's in-place write).
"""

from __future__ import annotations

from tgraph.ir import Graph
from tgraph.passes.simplify import adds_taking, dce


def scatter_into_sums(graph: Graph) -> int:
    """Rewrite ``graph`` in place; returns how many sums took their scatter in."""
    folded = 0
    for n, s, base in adds_taking(graph, "scatter_add"):
        if n.op == "add" and len(s.node.inputs) == 2:  # (not folded with its other operand)
            src = s.node
            n.op, n.inputs, n.attrs = "scatter_add", [*src.inputs, base], dict(src.attrs)
            folded += 1
    if folded:
        dce(graph)
    return folded
