"""The IR: a Graph is a flat, topologically ordered list of Nodes in SSA form.

Every Value is defined once: by a Node, or as a graph input, parameter or constant (its
``kind``, so a diagram never draws a weight as if it were an input). Every Node carries a
``scope`` path such as ``decoder/layer_2/attn/head_0`` that renderers turn into nested
boxes, and a free-form ``meta`` dict (autodiff records there the forward node a backward
node came from).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tgraph.errors import AttrError, ShapeError, TGraphError
from tgraph.shapes import fmt_shape
from tgraph.types import TensorType

INPUT, PARAM, CONST, INTERMEDIATE = "input", "param", "const", "intermediate"
VALUE_KINDS = (INPUT, PARAM, CONST, INTERMEDIATE)


@dataclass(eq=False)
class Value:
    name: str
    type: TensorType
    kind: str = INTERMEDIATE
    node: Node | None = field(default=None, repr=False)
    graph: Graph | None = field(default=None, repr=False)
    init: dict | None = None  # parameters: how init_params fills them
    data: np.ndarray | None = field(default=None, repr=False)  # constants

    @property
    def shape(self):
        return self.type.shape

    @property
    def dtype(self) -> str:
        return self.type.dtype

    @property
    def scope(self) -> str:
        return self.node.scope if self.node is not None else self.name.rpartition("/")[0]

    # Operators make model code read like the maths; they emit graph ops.
    def __add__(self, o):
        return _apply("add", self, o)

    def __radd__(self, o):
        return _apply("add", o, self)

    def __sub__(self, o):
        return _apply("sub", self, o)

    def __rsub__(self, o):
        return _apply("sub", o, self)

    def __mul__(self, o):
        return _apply("mul", self, o)

    def __rmul__(self, o):
        return _apply("mul", o, self)

    def __truediv__(self, o):
        return _apply("div", self, o)

    def __rtruediv__(self, o):
        return _apply("div", o, self)

    def __matmul__(self, o):
        return _apply("matmul", self, o)

    def __neg__(self):
        return _apply("neg", self)

    def __repr__(self) -> str:
        return f"Value({self.name!r}, {self.type}, {self.kind})"


def _apply(op: str, *args):
    graph = next(a.graph for a in args if isinstance(a, Value))
    return graph.apply(op, [graph.lift(a, like=args) for a in args])


@dataclass(eq=False)
class Node:
    name: str
    op: str
    inputs: list[Value]
    outputs: list[Value]
    attrs: dict[str, Any]
    scope: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def output(self) -> Value:
        return self.outputs[0]

    def where(self) -> str:
        """How messages name this node: op, node name and scope."""
        return f"{self.op} node {self.name!r} (scope {self.scope or '<root>'})"

    def __repr__(self) -> str:
        ins = ", ".join(v.name for v in self.inputs)
        return f"Node({self.name!r}: {self.op}({ins}) {self.attrs or ''})"


class Graph:
    """A computation graph under construction or ready to run."""

    def __init__(self, name: str = "graph", meta: dict | None = None):
        self.name = name
        self.nodes: list[Node] = []
        self.inputs: list[Value] = []
        self.params: list[Value] = []
        self.consts: list[Value] = []
        self.outputs: dict[str, Value] = {}
        self.meta: dict[str, Any] = dict(meta or {})
        self._scope: list[str] = []
        self._names: set[str] = set()
        self._next_suffix: dict[str, int] = {}

    # ----- construction ---------------------------------------------------
    @contextlib.contextmanager
    def scope(self, name: str) -> Iterator[None]:
        """Nest the nodes built inside under ``name`` (a path segment or a/b path)."""
        self._scope.extend(p for p in name.split("/") if p)
        depth = len([p for p in name.split("/") if p])
        try:
            yield
        finally:
            del self._scope[len(self._scope) - depth:]

    @property
    def current_scope(self) -> str:
        return "/".join(self._scope)

    def _unique(self, base: str) -> str:
        # the next suffix to try is remembered per base: O(1) per name, not a scan from _1
        name, i = base, self._next_suffix.get(base, 1)
        if name in self._names:
            while (name := f"{base}_{i}") in self._names:
                i += 1
            self._next_suffix[base] = i + 1
        self._names.add(name)
        return name

    def _scoped(self, name: str) -> str:
        return f"{self.current_scope}/{name}" if self.current_scope else name

    def _leaf(self, name: str, type_: TensorType, kind: str, **kw) -> Value:
        if name in self._names:
            raise TGraphError(f"duplicate value name {name!r} in graph {self.name!r}")
        self._names.add(name)
        return Value(name, type_, kind, graph=self, **kw)

    # input and param both take (name, shape, dtype): shape first, as in NumPy.
    def input(self, name: str, shape, dtype: str = "float32") -> Value:
        """A value fed at run time: ``g.input("tokens", ("B", "T"), "int64")``."""
        if isinstance(shape, str):
            raise TGraphError(f"input {name!r}: the shape comes before the dtype, "
                              f"g.input(name, shape, dtype); got shape {shape!r}")
        v = self._leaf(name, TensorType(dtype, tuple(shape)), INPUT)
        self.inputs.append(v)
        return v

    def param(self, name: str, shape, dtype: str = "float32", init: dict | None = None) -> Value:
        """A trainable weight, named by the current scope: ``layer_0/attn/w_q``."""
        if isinstance(shape, str):
            raise TGraphError(f"parameter {name!r}: the shape comes before the dtype, "
                              f"g.param(name, shape, dtype); got shape {shape!r}")
        v = self._leaf(self._scoped(name), TensorType(dtype, tuple(shape)), PARAM,
                       init=dict(init or {"dist": "normal", "std": 0.02}))
        self.params.append(v)
        return v

    def const(self, data, name: str = "const", dtype: str | None = None) -> Value:
        arr = np.asarray(data, dtype=dtype)
        if arr.dtype == np.float64 and dtype is None:
            arr = arr.astype(np.float32)
        v = Value(self._unique(self._scoped(name)), TensorType(str(arr.dtype), arr.shape),
                  CONST, graph=self, data=arr)
        self.consts.append(v)
        return v

    def lift(self, x, like=()) -> Value:
        """Turn a Python number into a scalar constant of the dtype of its float partner."""
        if isinstance(x, Value):
            return x
        dtype = next((a.dtype for a in like if isinstance(a, Value)), "float32")
        return self.const(x, name="scalar", dtype=dtype)

    def apply(self, op: str, inputs: list[Value], attrs: dict | None = None,
              name: str | None = None) -> Value | tuple[Value, ...]:
        """Add a node; returns its output (or a tuple when the op has several)."""
        from tgraph.ops.registry import get_op

        attrs = dict(attrs or {})
        opdef = get_op(op)
        for v in inputs:
            if not isinstance(v, Value) or v.graph is not self:
                raise TGraphError(f"{op}: input {v!r} does not belong to graph {self.name!r}")
        node_name = self._unique(self._scoped(name or op))
        node = Node(node_name, op, list(inputs), [], attrs, self.current_scope)
        out_types = infer_types(opdef, node)
        node.outputs = [
            Value(node_name if len(out_types) == 1 else f"{node_name}:{i}", t, INTERMEDIATE,
                  node=node, graph=self)
            for i, t in enumerate(out_types)
        ]
        self._names.update(v.name for v in node.outputs)
        self.nodes.append(node)
        return node.outputs[0] if len(node.outputs) == 1 else tuple(node.outputs)

    def set_output(self, name: str, value: Value) -> None:
        self.outputs[name] = value

    # ----- queries ---------------------------------------------------------
    def values(self) -> Iterator[Value]:
        yield from self.inputs
        yield from self.params
        yield from self.consts
        for n in self.nodes:
            yield from n.outputs

    def value(self, name: str) -> Value:
        for v in self.values():
            if v.name == name:
                return v
        raise TGraphError(f"graph {self.name!r} has no value named {name!r}")

    def users(self) -> dict[Value, list[Node]]:
        out: dict[Value, list[Node]] = {v: [] for v in self.values()}
        for n in self.nodes:
            for v in n.inputs:
                out.setdefault(v, []).append(n)
        return out

    def param_count(self) -> int:
        return sum(int(np.prod(p.shape)) for p in self.params)

    def validate(self) -> Graph:
        """Check SSA order, no cycles, and every node's types against its op's shape rule."""
        from tgraph.ops.registry import get_op

        defined = {id(v) for v in (*self.inputs, *self.params, *self.consts)}
        for n in self.nodes:
            for v in n.inputs:
                if id(v) not in defined:
                    raise TGraphError(f"{n.where()} uses {v.name!r} before it is defined "
                                      "(undefined value or a cycle)")
            expected = infer_types(get_op(n.op), n)
            got = [v.type for v in n.outputs]
            if expected != got:
                raise ShapeError(f"{n.where()}: outputs declared {', '.join(map(str, got))} "
                                 f"but its shape rule gives {', '.join(map(str, expected))}")
            defined.update(id(v) for v in n.outputs)
        for k, v in self.outputs.items():
            if id(v) not in defined:
                raise TGraphError(f"graph output {k!r} refers to undefined value {v.name!r}")
        return self

    def __repr__(self) -> str:
        return (f"Graph({self.name!r}: {len(self.nodes)} nodes, {len(self.inputs)} inputs, "
                f"{len(self.params)} params, outputs {list(self.outputs)})")


def infer_types(opdef, node: Node) -> list[TensorType]:
    """Run an op's shape rule; any complaint becomes one ShapeError naming node and shapes."""
    from tgraph.ops.attrs import arity_problem, attr_problem

    problem = arity_problem(opdef, len(node.inputs)) or attr_problem(opdef, node.attrs)
    if problem:
        raise AttrError(f"{node.where()}: {problem}")
    types = [v.type for v in node.inputs]
    try:
        out = opdef.infer(types, **node.attrs)
    except ShapeError as e:
        raise ShapeError(f"{node.where()}: {e} (inputs {_fmt_types(types)})") from None
    except (ValueError, TypeError, KeyError, IndexError) as e:
        raise ShapeError(f"{node.where()}: {e} (inputs {_fmt_types(types)})") from None
    return [out] if isinstance(out, TensorType) else list(out)


def _fmt_types(types) -> str:
    return ", ".join(f"{t.dtype}[{fmt_shape(t.shape)}]" for t in types) or "none"
