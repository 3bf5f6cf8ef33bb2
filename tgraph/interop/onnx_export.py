"""tgraph Graph -> ONNX ModelProto.

Each node becomes the standard ONNX ops its rule emits (``onnx_rules.RULES`` for built-in
ops, ``OpDef.to_onnx`` for a plugin's), named ``<scope>/<OnnxOp>`` so viewers that group by
name show the hierarchy. Symbolic dims stay symbolic: they are ``dim_param`` on inputs and
outputs, and an attr that holds one (a reshape to B×T×64) becomes a shape tensor computed
from an input's ``Shape`` at run time.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence

import numpy as np

from tgraph.errors import TGraphError
from tgraph.ir import Graph
from tgraph.shapes import _monomial

DEFAULT_OPSET = 17
MIN_OPSET, MAX_OPSET = 17, 21
INT64_MAX = np.iinfo(np.int64).max
EXTERNAL_DATA_BYTES = 2**31 - 2**26  # protobuf's 2 GiB ceiling, with room for the graph


class ExportError(TGraphError):
    """A graph that cannot be written as ONNX (an op without an ONNX rule, say)."""


def onnx_dtype(dtype: str) -> int:
    from onnx import helper

    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


class Emitter:
    """Builds the ONNX graph one tgraph node at a time; rules call ``op``, ``const``,
    ``scalar`` and ``shape`` and never name values themselves."""

    def __init__(self, graph: Graph, opset: int):
        self.graph, self.opset = graph, opset
        self.nodes: list = []
        self.initializers: list = []
        self.names: dict = {}  # tgraph Value -> ONNX value name
        self._taken: set[str] = set()
        self._scope = ""
        self._cache: dict = {}
        self._shared: set[int] = set()
        self._dim_source = _dim_sources(graph)

    def unique(self, base: str) -> str:
        name, i = base, 1
        while name in self._taken:
            name = f"{base}_{i}"
            i += 1
        self._taken.add(name)
        return name

    # ----- what rules use ----------------------------------------------------------------
    def op(self, op_type: str, inputs: Sequence[str], n_out: int = 1, **attrs):
        """Add an ONNX node in the current tgraph scope; returns its output name(s)."""
        from onnx import helper

        name = self.unique(f"{self._scope}/{op_type}" if self._scope else op_type)
        outs = [name if n_out == 1 else f"{name}:{i}" for i in range(n_out)]
        self._taken.update(outs)
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=name, **attrs))
        return outs[0] if n_out == 1 else outs

    def const(self, array, name: str = "const") -> str:
        from onnx import numpy_helper

        array = np.asarray(array)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._cache:
            full = self.unique(f"{self._scope}/{name}" if self._scope else name)
            self.initializers.append(numpy_helper.from_array(array, full))
            self._cache[key] = full
        return self._cache[key]

    def scalar(self, value, dtype: str) -> str:
        return self.const(np.asarray(value, dtype=dtype), "scalar")

    def ints(self, values) -> str:
        return self.const(np.asarray(values, dtype=np.int64), "ints")

    def dim(self, d) -> str:
        """A 1-D int64 tensor [d] for a dim that may be symbolic (``B``, ``B*T``, ``2*T``)."""
        if isinstance(d, int):
            return self.ints([d])
        key = ("dim", d)
        if key not in self._cache:
            coef, syms = _monomial(d)
            start = len(self.nodes)
            parts = [self._symbol(s) for s in sorted(syms.elements())]
            out = parts[0]
            for p in parts[1:]:
                out = self.op("Mul", [out, p])
            self._cache[key] = self.op("Mul", [out, self.ints([coef])]) if coef != 1 else out
            self._shared.update(id(x) for x in self.nodes[start:])
        return self._cache[key]

    def shape(self, dims: Sequence) -> str:
        """A 1-D int64 shape tensor; ints (and -1) are constants, symbols come from inputs."""
        if all(isinstance(d, int) for d in dims):
            return self.ints(list(dims))
        return self.op("Concat", [self.dim(d) for d in dims], axis=0)

    def _symbol(self, s: str) -> str:
        key = ("sym", s)
        if key not in self._cache:
            if s not in self._dim_source:
                raise ExportError(f"symbolic dim {s!r} is not an axis of any graph input, so "
                                  "ONNX cannot compute it at run time")
            value, axis = self._dim_source[s]
            saved, self._scope = self._scope, "shapes"
            self._cache[key] = self.op("Shape", [value], start=axis, end=axis + 1)
            self._shared.add(id(self.nodes[-1]))  # read by later nodes too: no group tag
            self._scope = saved
        return self._cache[key]


def _dim_sources(graph: Graph) -> dict[str, tuple[str, int]]:
    """Each plain symbol -> (graph input, axis) where it can be read at run time."""
    out: dict[str, tuple[str, int]] = {}
    for v in graph.inputs:
        for axis, d in enumerate(v.shape):
            if isinstance(d, str) and d.isidentifier():
                out.setdefault(d, (v.name, axis))
    return out


def tag_group(e: Emitter, nodes, n, ins, outs) -> None:
    """Mark the ONNX nodes one tgraph node became, so an import gets the node back whole
    (a mask stays a mask): every one carries ``tgraph.node``, the last also the op, its
    attrs and its ONNX inputs and outputs. Other readers ignore metadata."""
    import json

    from onnx import helper

    group = [x for x in nodes if id(x) not in e._shared]
    for x in group:
        helper.set_metadata_props(x, {"tgraph.node": n.name})
    if group:
        helper.set_metadata_props(group[-1], {
            "tgraph.node": n.name, "tgraph.op": n.op, "tgraph.attrs": json.dumps(n.attrs),
            "tgraph.inputs": json.dumps(ins), "tgraph.outputs": json.dumps(outs)})


def value_info(name: str, t):
    from onnx import helper

    return helper.make_tensor_value_info(name, onnx_dtype(t.dtype), list(t.shape))


def to_onnx_model(graph: Graph, params: Mapping[str, np.ndarray] | None = None,
                  opset: int = DEFAULT_OPSET, params_as_inputs: bool = False,
                  value_infos: bool = True):
    """The ONNX model of ``graph``: parameters are initializers holding ``params`` (or graph
    inputs with ``params_as_inputs``, for a runtime that feeds new weights every step)."""
    from onnx import helper, numpy_helper

    from tgraph.interop.onnx_rules import rule_for

    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(f"opset {opset} is not supported (choose {MIN_OPSET}..{MAX_OPSET})")
    if not params_as_inputs:
        from tgraph.io import check_weights

        check_weights(graph, dict(params or {}))
    e = Emitter(graph, opset)
    for v in (*graph.inputs, *graph.params, *graph.consts):
        e.names[v] = v.name
        e._taken.add(v.name)
    e._taken.update(graph.outputs)
    inputs = [value_info(v.name, v.type) for v in graph.inputs]
    if params_as_inputs:
        inputs += [value_info(v.name, v.type) for v in graph.params]
    else:
        for v in graph.params:
            arr = np.asarray(params[v.name], dtype=v.dtype)
            e.initializers.append(numpy_helper.from_array(arr, v.name))
    for c in graph.consts:
        e.initializers.append(numpy_helper.from_array(np.asarray(c.data), c.name))
    infos = []
    for n in graph.nodes:
        e._scope = n.scope
        start = len(e.nodes)
        ins = [e.names[v] for v in n.inputs]
        outs = rule_for(n)(e, n, ins)
        outs = [outs] if isinstance(outs, str) else list(outs)
        if len(outs) != len(n.outputs):
            raise ExportError(f"{n.where()}: its ONNX rule gave {len(outs)} output(s) for "
                              f"{len(n.outputs)}")
        tag_group(e, e.nodes[start:], n, ins, outs)
        for v, o in zip(n.outputs, outs):
            e.names[v] = o
            infos.append(value_info(o, v.type))
    outputs = []
    for key, v in graph.outputs.items():
        e._scope = "outputs"
        e.nodes.append(helper.make_node("Identity", [e.names[v]], [key],
                                        name=e.unique(f"outputs/{key}")))
        outputs.append(value_info(key, v.type))
    g = helper.make_graph(e.nodes, _clean(graph.name), inputs, outputs, e.initializers,
                          value_info=infos if value_infos else None)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="tgraph", ir_version=_ir_version(opset))
    model.doc_string = f"tgraph graph {graph.name!r}"
    props = {}
    if graph.meta:  # dim hints, vocabulary: what tgraph info and feeds read after an import
        props["tgraph.meta"] = json.dumps(graph.meta, default=str)
    if graph.consts:  # an import keeps these constant (other float initializers: weights)
        props["tgraph.consts"] = json.dumps([c.name for c in graph.consts])
    if props:
        helper.set_model_props(model, props)
    return model


def _ir_version(opset: int) -> int:
    from onnx import helper

    # the lowest IR version that carries this opset, so older runtimes load the file
    return min(row[1] for row in helper.VERSION_TABLE if row[2] >= opset)


def _clean(name: str) -> str:
    return name or "graph"


def export_onnx(graph: Graph, path, params: Mapping[str, np.ndarray] | None = None,
                opset: int = DEFAULT_OPSET, check: bool = True):
    """Write ``graph`` with its weights to ``path`` (.onnx); tensors past 2 GiB in all go
    to ``<path>.data`` beside it. Returns the model (without external tensors loaded)."""
    import os
    import tempfile
    from pathlib import Path

    import onnx

    from tgraph.io import atomic_write

    if params is None and graph.params:
        raise ExportError("the graph has parameters: pass params= (or --weights / --seed)")
    model = to_onnx_model(graph, params, opset)
    if check:
        check_onnx(model)
    path = Path(path)
    total = sum(math.prod(t.dims) * np.dtype(_np(t.data_type)).itemsize
                for t in model.graph.initializer)
    if total < EXTERNAL_DATA_BYTES:
        with atomic_write(path, "wb") as f:
            f.write(model.SerializeToString())
        return model
    # big models: the tensors go to one file beside the model; both appear together
    data = path.name + ".data"
    tmp = Path(tempfile.mkdtemp(dir=path.parent or "."))
    try:
        onnx.save_model(model, tmp / path.name, save_as_external_data=True,
                        all_tensors_to_one_file=True, location=data, size_threshold=1024)
        os.replace(tmp / data, path.parent / data)
        os.replace(tmp / path.name, path)
    finally:
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
    return model


def _np(data_type: int):
    from onnx import helper

    return helper.tensor_dtype_to_np_dtype(data_type)


def check_onnx(model) -> None:
    """``onnx.checker`` with full_check (types and shapes inferred and checked too)."""
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(f"the exported ONNX model does not check: {first}") from None
