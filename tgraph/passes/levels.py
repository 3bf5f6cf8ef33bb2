"""Optimisation levels, the one entry point to the passes.

    -O0  the graph as built (a copy)
    -O1  heads merged into batched paths, dead code, constants folded, common
         subexpressions merged, chains of reshapes and transposes shortened, to a fixed
         point
    -O2  -O1, then attention's mask and softmax as one op (in a forward-only graph, with its
         two products: one attention op), merged heads' biases added before the heads are
         split out, products of one input whose weights are concatenated anyway merged into
         one (merge_projections), transposed products computed
         in their reader's layout, a tied embedding's sparse gradient added onto its dense
         one, a residual's gradient and a bias's summed inside LayerNorm's
         (residual_into_norm_grad, sums_into_norm_grad), and elementwise chains fused into
         compiled loops (tgraph/codegen)

``optimize(graph, level)`` returns the new graph and a report {pass: nodes changed}.
``training_graph`` is the forward+backward graph at a level: the forward graph is cleaned
up, and at -O2 its products of one input merged (merge_projections), its attention made
one op that also returns its weights, and its exact GELUs written x·Φ(x) (gelu_as_product),
before it is differentiated (the backward then mirrors the fast forward: one attention_grad
op per attention, reading the weights the forward kept, as PyTorch's eager backward does,
and GELU's gradient reading the forward's Φ), and fusion runs on the whole forward+backward
graph, where the gradient chains are.
"""

from __future__ import annotations

from tgraph.errors import TGraphError
from tgraph.ir import Graph

LEVELS = (0, 1, 2)


def optimize(graph: Graph, level: int = 1, *, in_place: bool = False
             ) -> tuple[Graph, dict[str, int]]:
    """``in_place``: the passes may rewrite ``graph`` itself (a graph the caller just made
    and will not use again), saving a copy."""
    from tgraph.io import copy_graph
    from tgraph.passes.attention import fuse_attention, fuse_masked_softmax
    from tgraph.passes.fuse import fuse_elementwise
    from tgraph.passes.layout import bias_before_heads, transpose_products
    from tgraph.passes.merge_heads import merge_heads
    from tgraph.passes.norm import residual_into_norm_grad, sums_into_norm_grad
    from tgraph.passes.projections import merge_projections
    from tgraph.passes.scatter import scatter_into_sums
    from tgraph.passes.simplify import cse, dce, fold_constants, fold_layout

    if level not in LEVELS:
        raise TGraphError(f"optimisation level must be one of 0, 1, 2; got {level!r}")
    if level == 0:
        return copy_graph(graph).validate(), {}
    g, merged = merge_heads(graph)
    if g is graph and not in_place:
        g = copy_graph(graph)
    report = {"merge_heads": merged, "dce": dce(g), "fold_constants": 0, "cse": 0,
              "fold_layout": 0}
    while True:
        changed = {"fold_constants": fold_constants(g), "cse": cse(g),
                   "fold_layout": fold_layout(g)}
        for k, v in changed.items():
            report[k] += v
        if not any(changed.values()):
            break
    if level >= 2:
        report["fuse_masked_softmax"] = fuse_masked_softmax(g)
        report["fuse_attention"] = fuse_attention(g)
        report["transpose_products"] = transpose_products(g)
        report["bias_before_heads"] = bias_before_heads(g)
        report["fold_layout"] += fold_layout(g)  # (a moved bias: one concat, then merged)
        report["merge_projections"] = merge_projections(g, copy_weights=False)
        report["fold_layout"] += fold_layout(g)
        report["scatter_into_sums"] = scatter_into_sums(g)
        report["residual_into_norm_grad"] = residual_into_norm_grad(g)
        report["sums_into_norm_grad"] = sums_into_norm_grad(g)
        report["fuse_elementwise"] = fuse_elementwise(g)
    return g.validate(), report


def training_graph(graph: Graph, loss: str = "loss", level: int = 1) -> Graph:
    """d loss / d params of ``graph`` as a forward+backward graph compiled at ``level``."""
    from tgraph.autodiff import grad
    from tgraph.passes.attention import fuse_attention, fuse_masked_softmax
    from tgraph.passes.gelu import gelu_as_product
    from tgraph.passes.layout import bias_before_heads
    from tgraph.passes.projections import merge_projections
    from tgraph.passes.simplify import fold_layout

    forward = optimize(graph, min(level, 1))[0]
    if level >= 2:
        if bias_before_heads(forward):  # the biases then merge with their products
            fold_layout(forward)
        merge_projections(forward)
        fuse_masked_softmax(forward)
        fuse_attention(forward, keep_weights=True)  # its gradient: one attention_grad op
        gelu_as_product(forward)  # its gradient reads the forward's Φ
    return optimize(grad(forward, loss), level, in_place=True)[0]
