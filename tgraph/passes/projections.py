"""Products of one input with several weights as one product, for training graphs (-O2).

``x @ w_q``, ``x @ w_k`` and ``x @ w_v`` read the same x: they become
``split(x @ concat(w_q, w_k, w_v))``, one GEMM three times as wide. ``training_graph``
applies it to the forward graph before autodiff, so the backward mirrors it: the three
input gradients become one product with K = 3·D instead of three products and two adds,
and the three weight gradients one product, split. When each product's one reader adds a
bias vector, the biases are concatenated too and added once to the wide product. The
pieces are views of the wide result; what is copied is the weights, once a run.

That copy is why a forward-only graph merges only products whose weights are concats
already (heads drawn one by one, their weights concatenated by merge_heads; fold_layout
then makes the two concats one): with weights to copy it buys nothing there (GPT config M
forward 61.5 vs 60.9 ms) or costs (gpt2-small, 128 rows against 768×2304 weights: 228.6
vs 220.4 ms), while a training step gains (gpt2-small 651 vs 689 ms, config M 161 vs
163 ms).
"""

from __future__ import annotations

from tgraph.ir import Graph, Node
from tgraph.passes.simplify import dce, move_before, replace_values


def merge_projections(graph: Graph, copy_weights: bool = True) -> int:
    """Rewrite ``graph`` in place; returns how many products were merged into others.
    ``copy_weights=False``: only products whose weights are each made by a concat."""
    position = {id(n): i for i, n in enumerate(graph.nodes)}
    users = graph.users()
    outputs = set(map(id, graph.outputs.values()))
    siblings: dict[int, list[Node]] = {}
    for n in graph.nodes:
        if n.op == "matmul" and n.inputs[1].type.rank == 2:
            siblings.setdefault(id(n.inputs[0]), []).append(n)
    same, merged = {}, 0
    for group in siblings.values():
        first = group[0]
        # the merged product takes the first one's place: a weight made later joins when
        # its maker reads only leaves (merged heads' concat of weights) and moves up
        group = [n for n in group if _hoistable(n.inputs[1], position[id(first)], position)
                 and n.inputs[1].dtype == first.inputs[1].dtype
                 and isinstance(n.inputs[1].shape[1], int)
                 and (copy_weights or _concatenated(n.inputs[1]))]
        if len(group) < 2:
            continue
        x = first.inputs[0]
        biased = [_bias_add(n, users, position[id(first)], position) for n in group]
        if not all(biased) or any(id(n.output) in outputs for n in group):
            biased = None  # (a graph output that is a bare product stays one)
        made = [n.inputs[1] for n in group[1:]] + [b for _, b in biased or ()]
        late = [v.node for v in made if not _ready(v, position[id(first)], position)]
        if late:
            move_before(graph, late, first)
        count = len(graph.nodes)
        with graph.scope(first.scope):
            weights = graph.apply("concat", [n.inputs[1] for n in group], {"axis": 1},
                                  name="merged_weights")
            product = graph.apply("matmul", [x, weights], name="merged_matmul")
            if biased:
                bias = graph.apply("concat", [b for _, b in biased], {"axis": 0},
                                   name="merged_biases")
                product = graph.apply("add", [product, bias], name="merged_add")
            pieces = graph.apply("split", [product], {
                "axis": x.type.rank - 1, "sizes": [n.output.shape[-1] for n in group]},
                name="merged_split")
        move_before(graph, graph.nodes[count:], first)
        ends = [add.output for add, _ in biased] if biased else [n.output for n in group]
        same.update(zip(ends, pieces))
        merged += len(group) - 1
    if same:
        replace_values(graph, same)
        dce(graph)
    return merged


def _bias_add(n: Node, users, before: int, position) -> tuple[Node, object] | None:
    """(the add, its bias) when the product's one reader adds it a bias vector made before
    position ``before``, or made from leaves only (merged heads' concat of biases)."""
    readers = users[n.output]
    if len(readers) != 1 or readers[0].op != "add":
        return None
    add = readers[0]
    others = [v for v in add.inputs if v is not n.output]
    if len(others) != 1 or add.output.type != n.output.type:
        return None
    b = others[0]
    if (b.type.rank != 1 or b.shape[0] != n.output.shape[-1] or b.dtype != n.output.dtype
            or not _hoistable(b, before, position)):
        return None
    return add, b


def _concatenated(w) -> bool:
    return w.node is not None and w.node.op == "concat"


def _hoistable(w, before: int, position: dict[int, int]) -> bool:
    return _ready(w, before, position) or all(v.node is None for v in w.node.inputs)


def _ready(w, before: int, position: dict[int, int]) -> bool:
    """Whether ``w`` is a leaf or made by a node earlier than position ``before``."""
    return w.node is None or position[id(w.node)] < before
