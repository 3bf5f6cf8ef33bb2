"""The one op registry: a name maps to one OpDef holding everything about the op.

Built-in ops and user plugins register through the same door::

    @register_op
    class Swish(OpDef):
        name = "swish"
        def infer(self, types, **attrs): return types[0]
        def kernel(self, xp, x, **attrs): return x / (1 + xp.exp(-x))
        def vjp(self, node, grads): ...   # emits graph ops, see tgraph/autodiff.py

Kernels are written against an array namespace ``xp`` (NumPy or CuPy), so one kernel
serves both backends; a backend may still register a faster kernel for an op by name.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tgraph.errors import NoGradientError, TGraphError, UnknownOpError
from tgraph.types import TensorType


@dataclass(frozen=True)
class Param:
    """A learned input an op declares: a norm's gain and bias, a PReLU's slope.

    ``shape`` comes from the type of the op's first input; the dtype is that input's.
    ``init`` is an ``init_params`` spec: {"dist": "ones"}, {"dist": "zeros"},
    {"dist": "normal", "std": s} or {"dist": "uniform", "limit": a}."""

    name: str
    shape: tuple
    init: dict = field(default_factory=lambda: {"dist": "zeros"})


class OpDef:
    """Subclass, set ``name``, and implement ``infer`` and ``kernel``; the rest is optional."""

    name: str = ""
    #: attrs that hold shapes which may contain symbolic dims; the executor binds them
    #: to ints before calling the kernel.
    shape_attrs: tuple[str, ...] = ()
    #: attr name -> kind (see tgraph.ops.attrs); None: names from ``infer``'s signature.
    attr_kinds: dict | None = None
    #: human-readable signature for ``tgraph ops``.
    signature: str = ""
    #: what the op is, one line (defaults to the class docstring's first line).
    doc: str = ""
    #: the module that registered the op (set by register_op).
    source: str = ""
    #: reads only its inputs' shapes, never their values (positions, numel): diagrams draw
    #: such an input as a dotted "shape of" edge, not a data edge.
    shape_only: bool = False
    #: the kernel's result is always a new array, never a view of an input: the memory plan
    #: (tgraph/memplan.py) then ends an input's buffer at its last reader. The safe default,
    #: False, keeps the buffer for as long as the result lives.
    fresh_result: bool = False

    def infer(self, types: Sequence[TensorType], **attrs) -> TensorType | Sequence[TensorType]:
        raise NotImplementedError

    def kernel(self, xp, *arrays, **attrs) -> Any:
        raise NotImplementedError

    #: optional JAX rule ``jax_kernel(self, jnp, *arrays, **attrs)`` for ``tgraph.lower.to_jax``,
    #: where ``kernel`` is not pure array code (it writes into arrays, which JAX's cannot do);
    #: None: the lowering calls ``kernel`` with ``xp = jax.numpy``.
    jax_kernel = None

    def vjp(self, node, grads: list) -> list:
        """Cotangents for each input given cotangents of the outputs (None = zero).

        Written with graph ops on ``node``'s graph, so the backward pass is a graph too.
        """
        raise NoGradientError(
            f"op {self.name!r} has no gradient rule (VJP); a gradient must flow through "
            f"{node.where()}")

    has_vjp = property(lambda self: type(self).vjp is not OpDef.vjp)

    def params(self, x: TensorType, **attrs) -> list[Param]:
        """The learned inputs that follow x, in order, when a model swaps this op in by name
        (``activation=``, ``norm_op=``) or ``replace_op`` puts it in a graph; they become
        parameters named ``<scope>/<name>``. Default: none."""
        return []

    def takes_attr(self, attr: str) -> bool:
        """Whether the shape rule names the keyword ``attr`` (a norm's eps, say): a model
        or ``replace_op`` passes such an attr on and leaves the others out."""
        return attr in inspect.signature(self.infer).parameters

    def scalar(self, args: Sequence[str], **attrs) -> str | None:
        """The op's value on one element as a Python expression over the argument
        expressions ``args`` (names bound to scalars; ``math`` is in scope), or None.

        An op with a formula joins elementwise fusion at -O2: a fused node becomes one
        compiled loop (tgraph/codegen). Without one it stays a node of its own."""
        return None

    def flops(self, in_shapes: Sequence[tuple], out_shapes: Sequence[tuple], **attrs) -> int:
        """Floating-point operations for concrete shapes; default one per output element."""
        return sum(math.prod(s) for s in out_shapes)

    def label(self, **attrs) -> str:
        """The text a diagram puts in this op's box."""
        return self.name

    def examples(self, rng) -> list[tuple[list, dict]]:
        """Representative (input arrays, attrs) cases, floats in float64, for ``check_op``:
        shape rule vs kernel output, and VJP vs finite differences. Include broadcasting
        cases where the op broadcasts."""
        return []

    def describe(self) -> str:
        """The first paragraph of ``doc`` (or the docstring), on one line: a sentence that
        wraps in the source is not cut."""
        text = (self.doc or type(self).__doc__ or "").strip()
        return " ".join(text.split("\n\n")[0].split())


_REGISTRY: dict[str, OpDef] = {}


def register_op(cls=None, *, override: bool = False):
    """Class decorator adding an OpDef subclass (or instance) to the registry.

    A second op with a taken name is refused unless ``override=True`` says so.
    """

    def add(c):
        inst = c() if isinstance(c, type) else c
        if not inst.name:
            raise TGraphError(f"{c!r} has no op name")
        if inst.name in _REGISTRY and not override:
            raise TGraphError(
                f"op {inst.name!r} is already registered (by {_REGISTRY[inst.name].source}); "
                "pass override=True to replace it")
        inst.source = inst.source or getattr(c, "__module__", "?")
        _REGISTRY[inst.name] = inst
        return c

    return add(cls) if cls is not None else add


def unregister_op(name: str) -> None:
    _REGISTRY.pop(name, None)


def get_op(name: str) -> OpDef:
    if name not in _REGISTRY:  # installed plugin packages register on first need
        from tgraph.plugins import load_installed

        load_installed()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownOpError(
            f"unknown op {name!r}: not a built-in op and no loaded plugin registers it "
            "(load its plugin with --plugin MODULE_OR_PATH or TGRAPH_PLUGINS)") from None


def all_ops() -> dict[str, OpDef]:
    return dict(sorted(_REGISTRY.items()))
