"""Products computed in the layout their reader wants (-O2).

``transpose(matmul(transpose(a), b))``, both transposes swapping the last two axes, is
``matmul(transpose(b), a)``: the same numbers, but the product comes out contiguous where
it was a transposed view of one. Autodiff makes this shape for a weight used transposed: a
tied embedding's head gradient is ``(xᵀ·g)ᵀ``, [V, D] as a strided view of [D, V], and
every reader of it (the sum with the lookup's gradient, an optimizer) then walks 154 MB
(gpt2-small) a column at a time. The BLAS reads transposed operands for free, so the
rewritten product costs what the old one did.
"""

from __future__ import annotations

from tgraph.ir import Graph, Node
from tgraph.passes.simplify import dce, replace_values


def transpose_products(graph: Graph) -> int:
    """Rewrite ``graph`` in place; returns how many products changed layout."""
    users = graph.users()
    outputs = set(map(id, graph.outputs.values()))
    same = {}  # a dropped outer transpose's output -> the product now in its layout
    for outer in list(graph.nodes):
        product = outer.inputs[0].node if swaps_last_axes(outer) else None
        if product is None or product.op != "matmul":
            continue
        inner = product.inputs[0].node
        if (not swaps_last_axes(inner) or users[product.output] != [outer]
                or users[inner.output] != [product]
                or {id(product.output), id(inner.output)} & outputs):
            continue
        a, b = inner.inputs[0], product.inputs[1]
        graph.nodes.remove(inner)  # it now transposes b: placed right before the product
        graph.nodes.insert(graph.nodes.index(product), inner)
        inner.inputs = [b]
        inner.output.type = b.type.with_shape(_swapped(b.shape))
        product.inputs = [inner.output, a]
        product.output.type = outer.output.type
        same[outer.output] = product.output
    if same:
        replace_values(graph, same)
        dce(graph)
    return len(same)


def swaps_last_axes(n: Node | None) -> bool:
    """Whether ``n`` transposes its input's last two axes (and only those)."""
    if n is None or n.op != "transpose":
        return False
    rank = n.inputs[0].type.rank
    return rank >= 2 and list(n.attrs.get("perm", ())) == [*range(rank - 2), rank - 1, rank - 2]


def _swapped(shape):
    return (*shape[:-2], shape[-1], shape[-2])
