"""tgraph.ops: the op registry and the built-in primitives, one module per family."""

from tgraph.ops import elementwise, fused, fused_grads, layout, linalg, masking, reduce  # noqa: F401  (registers)
from tgraph.ops.elementwise import unbroadcast
from tgraph.ops.registry import OpDef, Param, all_ops, get_op, register_op, unregister_op

__all__ = ["OpDef", "Param", "all_ops", "get_op", "register_op", "unbroadcast", "unregister_op"]
