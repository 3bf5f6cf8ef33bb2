"""Graph-to-graph passes. Each takes a Graph, rewrites it in place and returns how many
nodes it changed; ``optimize(graph, level)`` runs them on a copy (see levels.py)."""

from tgraph.passes.fuse import fuse_elementwise
from tgraph.passes.levels import LEVELS, optimize, training_graph
from tgraph.passes.merge_heads import merge_heads
from tgraph.passes.replace import replace_op
from tgraph.passes.simplify import cse, dce, fold_constants, fold_layout

__all__ = ["LEVELS", "cse", "dce", "fold_constants", "fold_layout", "fuse_elementwise",
           "merge_heads", "optimize", "replace_op", "training_graph"]
