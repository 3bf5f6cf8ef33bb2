"""Example tgraph plugin: SwiGLU and RMSNorm as ops, with builder functions to call them."""

from tgraph_swiglu_rmsnorm.ops import rmsnorm, swiglu

__all__ = ["rmsnorm", "swiglu"]
