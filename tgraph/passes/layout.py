"""Products and biases computed in the layout that costs least (-O2).

``transpose(matmul(transpose(a), b))``, both transposes swapping the last two axes, is
``matmul(transpose(b), a)``: the same numbers, but the product comes out contiguous where
it was a transposed view of one. Autodiff makes this shape for a weight used transposed: a
tied embedding's head gradient is ``(xᵀ·g)ᵀ``, [V, D] as a strided view of [D, V], and
every reader of it (the sum with the lookup's gradient, an optimizer) then walks 154 MB
(gpt2-small) a column at a time. The BLAS reads transposed operands for free, so the
rewritten product costs what the old one did.

Likewise a bias added after a reshape into heads and a transpose is added before them
(``bias_before_heads``), onto the contiguous product.
"""

from __future__ import annotations

from tgraph.ir import Graph, Node
from tgraph.passes.simplify import dce, move_before, replace_values


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
        move_before(graph, [inner], product)  # it now transposes b: right before the product
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


def bias_before_heads(graph: Graph) -> int:
    """``transpose(reshape(y)) + b``, the reshape splitting y's last axis (into heads) and b
    varying along those pieces only, becomes ``transpose(reshape(y + b'))`` with b' = b laid
    out along y's last axis: one contiguous add, where merged heads add their stacked
    biases [H, 1, d] onto a transposed view. Rewrites ``graph`` in place; returns how
    many adds moved."""
    users = graph.users()
    outputs = set(map(id, graph.outputs.values()))
    same, moved = {}, 0
    for add in list(graph.nodes):
        found = _head_bias(add, users, outputs) if add.op == "add" else None
        if found is None:
            continue
        split, spread, b, in_pieces = found
        y, n = split.inputs[0], split.inputs[0].shape[-1]
        start = len(graph.nodes)
        with graph.scope(add.scope):
            lined = graph.apply("reshape", [b], {"shape": in_pieces[0]})
            lined = graph.apply("transpose", [lined], {"perm": in_pieces[1]})
            flat = graph.apply("reshape", [lined], {"shape": [n]})
            biased = graph.apply("add", [y, flat])
        # the reshape and transpose now read the sum: after it, where the add was
        move_before(graph, [*graph.nodes[start:], split, spread], add)
        split.inputs = [biased]
        same[add.output] = spread.output
        moved += 1
    if same:
        replace_values(graph, same)
        dce(graph)
    return moved


def _head_bias(add: Node, users, outputs):
    """(reshape, transpose, bias, (bias shape in the transpose's input order, the
    permutation that puts it there)) for an add that fits bias_before_heads, else None."""
    for z, b in (add.inputs, add.inputs[::-1]):
        spread = z.node
        split = spread.inputs[0].node if spread is not None and spread.op == "transpose" \
            else None
        if split is None or split.op != "reshape" or add.output.type != z.type:
            continue
        y, pieces = split.inputs[0], split.output.shape
        if (users[y] != [split] or users[split.output] != [spread] or users[z] != [add]
                or {id(y), id(split.output), id(z)} & outputs or y.type.rank < 1
                or len(pieces) != y.type.rank + 1 or tuple(pieces[:-2]) != tuple(y.shape[:-1])
                or not all(isinstance(d, int) for d in (*pieces[-2:], y.shape[-1]))
                or b.type.rank > z.type.rank or b.dtype != y.dtype):
            continue
        perm = list(spread.attrs["perm"])
        padded = [1] * (z.type.rank - b.type.rank) + list(b.shape)
        inverse = [perm.index(i) for i in range(len(perm))]
        laid = [padded[inverse[i]] for i in range(len(perm))]  # b in reshape-output order
        if any(d != 1 for d in laid[:-2]) or laid[-2:] != list(pieces[-2:]):
            continue
        return split, spread, b, (padded, inverse)
    return None
