"""Lowering: a tgraph graph handed to an engine that scales past one machine (JAX/XLA)."""

from tgraph.lower.jax import JaxExecutable, load_jax, to_jax

__all__ = ["JaxExecutable", "load_jax", "to_jax"]
