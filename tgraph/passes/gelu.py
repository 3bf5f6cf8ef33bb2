"""``gelu_as_product``: exact GELU written x·Φ(x) in a forward graph about to be
differentiated, so that its gradient reads Φ instead of computing it again.

GELU's gradient g·(Φ(x) + x·φ(x)) spends most of its time on Φ (an exp, a division and a
degree-9 polynomial per element), which the forward has just computed. As ``mul(x,
ndtr(x))``, autodiff's gradient is g·Φ + (g·x)·φ(x), whose Φ is the forward's; fusion then
makes the forward loop write Φ beside GELU's output and the backward loop read it. GPT config
M's FFN gradient loop over [8, 128, 1024]: 1.43 → 0.47 ms on one core, for 4 MB more kept per
layer. The tanh form has no such split (its gradient needs tanh's own argument) and stays.
"""

from __future__ import annotations

from tgraph.ir import Graph
from tgraph.passes.simplify import dce, move_before, replace_values


def gelu_as_product(graph: Graph) -> int:
    """Rewrite ``graph`` in place; returns how many exact GELUs became x·Φ(x)."""
    same = {}
    for n in list(graph.nodes):
        if n.op != "gelu" or n.attrs.get("approximate", "none") != "none":
            continue
        start = len(graph.nodes)
        with graph.scope(n.scope):
            x = n.inputs[0]
            same[n.output] = graph.apply("mul", [x, graph.apply("ndtr", [x])])
        move_before(graph, graph.nodes[start:], n)
    if same:
        replace_values(graph, same)
        dce(graph)
    return len(same)
