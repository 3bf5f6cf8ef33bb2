"""``to_jax(graph)``: a tgraph graph as a pure function of ``jax.numpy`` ops.

Each node becomes one call: the op's ``jax_kernel`` where it has one (ops whose NumPy kernel
writes into arrays or checks values on the host: softmax, mask, gather, scatter_add,
unslice, gelu_grad), else its ordinary
``kernel`` with ``xp = jax.numpy``, which is pure array code for every other built-in op.
Symbolic dims are bound from the feeds' shapes while JAX traces, so ``jax.jit`` compiles
once per distinct set of shapes, and every node's traced output is checked against its shape
rule then, at no cost per run. JAX then supplies what tgraph's executor does not: XLA's
whole-graph compilation, its autodiff (``jax.grad``) and sharding over device meshes.

JAX is optional (``pip install tgraph[jax]``). Float64 graphs need JAX's x64 mode; int64
values become int32 without it, as JAX does everywhere.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from tgraph.errors import BackendError, FeedError, LoweringError
from tgraph.execute import bind_dims, check_feeds, check_int_ranges
from tgraph.io import check_weights
from tgraph.ir import Graph
from tgraph.shapes import eval_shape, fmt_shape

_NOT_INSTALLED = "JAX is not installed: pip install 'tgraph[jax]' (or pip install jax)"
# what a NumPy kernel that writes into arrays (or reaches for the host) raises under tracing
_NOT_PURE = (TypeError, AttributeError, NotImplementedError, ImportError, IndexError)


def load_jax():
    """The jax module, or one BackendError line saying how to install it."""
    try:
        import jax
    except ImportError:
        raise BackendError(_NOT_INSTALLED) from None
    return jax


def needs_x64(graph: Graph) -> bool:
    return any(v.dtype == "float64" for v in graph.values())


def enable_x64_for(graph: Graph) -> None:
    """Turn on JAX's x64 mode when the graph computes in float64 (the CLI's choice; a
    library caller decides for itself)."""
    if needs_x64(graph):
        load_jax().config.update("jax_enable_x64", True)


def to_jax(graph: Graph, dims: Mapping[str, int] | None = None) -> Callable:
    """``fn(params, feeds) -> {output name: jax array}``, pure: jit it, grad it, shard it.

    ``dims`` binds symbols that no feed's shape gives."""
    jax = load_jax()
    jnp = jax.numpy
    from tgraph.ops.registry import get_op

    graph.validate()
    if needs_x64(graph) and not jax.config.jax_enable_x64:
        raise LoweringError(f"graph {graph.name!r} computes in float64, which JAX gives only in "
                            "x64 mode: jax.config.update('jax_enable_x64', True) first")
    rules = [(n, get_op(n.op)) for n in graph.nodes]  # unknown ops fail here, not mid-trace
    canonical = jax.dtypes.canonicalize_dtype

    def fn(params: Mapping[str, Any], feeds: Mapping[str, Any]) -> dict[str, Any]:
        check_feeds(graph, feeds)
        check_weights(graph, params)
        env = bind_dims(graph, feeds, dims)
        val: dict[int, Any] = {}
        for v in graph.inputs:
            val[id(v)] = _as_jax(jnp, feeds[v.name], v, canonical, "feed")
        for v in graph.params:
            val[id(v)] = _as_jax(jnp, params[v.name], v, canonical, "parameter")
        for c in graph.consts:
            val[id(c)] = jnp.asarray(c.data, dtype=canonical(c.dtype))
        for node, opdef in rules:
            attrs = dict(node.attrs)
            for k in opdef.shape_attrs:
                attrs[k] = list(eval_shape(attrs[k], env))
            if "dtype" in attrs:
                attrs["dtype"] = canonical(attrs["dtype"])
            outs = _apply(node, opdef, jnp, [val[id(v)] for v in node.inputs], attrs)
            for v, a in zip(node.outputs, outs):
                _check(node, v, a, env, canonical)
                val[id(v)] = a
        return {k: val[id(v)] for k, v in graph.outputs.items()}

    return fn


def _as_jax(jnp, a, v, canonical, what: str):
    kind = np.dtype(a.dtype).kind if hasattr(a, "dtype") else np.asarray(a).dtype.kind
    if (kind == "f") != (np.dtype(v.dtype).kind == "f"):
        raise FeedError(f"{what} {v.name!r} has dtype {a.dtype}, expected {v.dtype} "
                        f"({fmt_shape(v.shape)})")
    return jnp.asarray(a, dtype=canonical(v.dtype))


def _apply(node, opdef, jnp, arrays, attrs) -> list:
    rule = opdef.jax_kernel or opdef.kernel
    try:
        with warnings.catch_warnings():  # a kernel's astype(int64) is int32 without x64, as meant
            warnings.filterwarnings("ignore", "Explicitly requested dtype", UserWarning)
            out = rule(jnp, *arrays, **attrs)
    except _NOT_PURE as e:
        first = (str(e).strip().splitlines() or [""])[0][:200]
        why = ("its JAX rule failed" if opdef.jax_kernel else
               "it has no JAX rule and its kernel is not pure array code")
        raise LoweringError(
            f"{node.where()} cannot be lowered to JAX: {why} ({type(e).__name__}: {first}); "
            f"give op {node.op!r} a jax_kernel(self, jnp, *arrays, **attrs)") from None
    return list(out) if len(node.outputs) > 1 else [out]


def _check(node, v, a, env, canonical) -> None:
    """The traced output against the shape rule: a wrong JAX rule fails here, naming its node."""
    want = eval_shape(v.shape, env)
    if tuple(a.shape) != want or a.dtype != canonical(v.dtype):
        raise LoweringError(f"{node.where()}: its JAX rule gave {a.dtype}[{fmt_shape(a.shape)}] "
                            f"but the shape rule says {canonical(v.dtype)}[{fmt_shape(want)}]")


class JaxDevice:
    """The Backend protocol's face of JAX, for code that times runs or copies results
    (benchmarks, the trainer): XLA runs asynchronously, so ``synchronize`` waits for the
    last run's outputs."""

    name = "jax"

    def __init__(self, jax):
        self._jax, self.pending = jax, ()

    def asarray(self, a, dtype=None):
        return self._jax.numpy.asarray(a, dtype=dtype)

    def to_numpy(self, a) -> np.ndarray:
        return np.asarray(a)

    def synchronize(self) -> None:
        self._jax.block_until_ready(self.pending)


class JaxExecutable:
    """The graph jitted whole by XLA, run like an ``Executable``: NumPy in, NumPy out."""

    def __init__(self, graph: Graph):
        jax = load_jax()
        self.graph = graph
        self.backend = JaxDevice(jax)
        self._jitted: dict[tuple, Callable] = {}  # per dims given on the side
        self._jax = jax
        to_jax(graph)  # fail now on an op that cannot be lowered, before any data comes

    def run(self, feeds=None, params=None, dims=None) -> dict[str, np.ndarray]:
        out = self.run_device(feeds, params, dims)
        return {k: np.asarray(a) for k, a in out.items()}

    def run_device(self, feeds=None, params=None, dims=None) -> dict[str, Any]:
        """Outputs as JAX arrays, on the device XLA ran on."""
        feeds = dict(feeds or {})
        check_feeds(self.graph, feeds)
        check_int_ranges(self.graph, feeds)  # on the host: a jitted gather would not complain
        key = tuple(sorted((dims or {}).items()))
        if key not in self._jitted:
            self._jitted[key] = self._jax.jit(to_jax(self.graph, dims))
        out = self._jitted[key](dict(params or {}), feeds)
        self.backend.pending = out
        return out
