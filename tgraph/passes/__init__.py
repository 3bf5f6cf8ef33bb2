"""Graph-to-graph passes. Each takes a Graph, rewrites it in place and returns how many
nodes it changed; ``optimize`` runs them to a fixed point on a copy."""

from tgraph.passes.merge_heads import merge_heads
from tgraph.passes.replace import replace_op
from tgraph.passes.simplify import cse, dce, fold_constants, optimize

__all__ = ["cse", "dce", "fold_constants", "merge_heads", "optimize", "replace_op"]
