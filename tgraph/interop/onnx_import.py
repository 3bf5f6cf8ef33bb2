"""ONNX -> tgraph IR on tgraph's primitives.

Every ONNX value is either a tgraph ``Value`` (computed at run time) or a constant known
now: a NumPy array, or, for shape arithmetic, an object array whose items may be symbolic
dims (``Sym``). ``Shape`` of a value gives its dims; ``Gather``/``Concat``/``Mul``/... on
constants fold here, so the ``Shape → Gather → Concat → Reshape`` chains exporters emit
become one ``reshape`` to ``[B, T, 4, 16]``. Float initializers become parameters (so an
inference graph is trainable); everything else constant becomes a constant.

Scopes come from the node names (``/layers.0/self_attn/MatMul`` → ``layers/0/self_attn``)
or from the exporter's ``pkg.torch.onnx.name_scopes`` metadata.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from collections.abc import Callable

import numpy as np

from tgraph import builder as tb
from tgraph.errors import GraphFileError, TGraphError
from tgraph.interop.onnx_read import Limits, load_model
from tgraph.ir import Graph, Value
from tgraph.shapes import FLOAT_DTYPES, broadcast, dim_div, dim_mul, norm_dim


class OnnxImportError(TGraphError):
    """An ONNX model tgraph cannot express (an unsupported op, a dynamic shape it cannot
    follow)."""


class Unfoldable(Exception):
    """Constant folding met symbolic arithmetic outside monomials."""


class Sym:
    """A symbolic dim inside a constant shape tensor; arithmetic stays symbolic where it
    is a monomial (B·T, 4·T) and raises Unfoldable otherwise."""

    __slots__ = ("d",)

    def __init__(self, d):
        self.d = norm_dim(d)

    def __mul__(self, o):
        return dim(dim_mul(self.d, _raw(o)))

    __rmul__ = __mul__

    def __floordiv__(self, o):
        q = dim_div(self.d, _raw(o))
        if q is None:
            raise Unfoldable(f"{self.d} / {_raw(o)}")
        return dim(q)

    __truediv__ = __floordiv__

    def __rfloordiv__(self, o):
        raise Unfoldable(f"{o} / {self.d}")

    __rtruediv__ = __rfloordiv__

    def __add__(self, o):
        if _raw(o) == 0:
            return self
        raise Unfoldable(f"{self.d} + {_raw(o)}")

    __radd__ = __add__

    def __sub__(self, o):
        if self == o:
            return 0
        if _raw(o) == 0:
            return self
        raise Unfoldable(f"{self.d} - {_raw(o)}")

    def __rsub__(self, o):
        raise Unfoldable(f"{o} - {self.d}")

    def __neg__(self):
        raise Unfoldable(f"-{self.d}")

    def __eq__(self, o):
        return isinstance(o, Sym) and o.d == self.d

    def __ne__(self, o):
        return not self == o

    def __lt__(self, o):
        raise Unfoldable(f"{self.d} < {_raw(o)}")

    __gt__ = __le__ = __ge__ = __lt__

    def __hash__(self):
        return hash(self.d)

    def __repr__(self):
        return f"Sym({self.d!r})"


def _raw(o):
    if isinstance(o, Sym):
        return o.d
    if isinstance(o, (np.integer, int)):
        return int(o)
    raise Unfoldable(f"symbolic dim with {o!r}")


def dim(d):
    """An int stays an int; a symbol becomes a Sym."""
    d = norm_dim(d) if not isinstance(d, (int, np.integer)) else int(d)
    return d if isinstance(d, int) else Sym(d)


def dims_array(shape) -> np.ndarray:
    """A shape as a constant: int64 if every dim is known, else an object array."""
    items = [dim(d) for d in shape]
    if all(isinstance(d, int) for d in items):
        return np.asarray(items, dtype=np.int64)
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def to_dims(a: np.ndarray) -> list:
    """A constant shape tensor as tgraph dims (ints and symbol strings)."""
    return [d.d if isinstance(d, Sym) else int(d) for d in np.asarray(a).reshape(-1)]


def as_const(x) -> np.ndarray:
    """A folded result as an array: a lone Sym or Python number (np.take of one item, say)
    becomes a 0-d array; object arrays without symbols become numeric again."""
    if isinstance(x, np.ndarray):
        return _tidy(x) if x.dtype == object else x
    if isinstance(x, Sym):
        out = np.empty((), dtype=object)
        out[()] = x
        return out
    return np.asarray(x)


def is_symbolic(a) -> bool:
    return isinstance(a, np.ndarray) and a.dtype == object


_DTYPES = {1: "float32", 11: "float64", 10: "float16", 6: "int32", 7: "int64", 9: "bool"}


def dtype_of(onnx_type: int, where: str) -> str:
    if onnx_type not in _DTYPES:
        from onnx import helper

        name = helper.tensor_dtype_to_string(onnx_type) if onnx_type else "undefined"
        raise OnnxImportError(f"{where}: element type {name} is not supported "
                           f"(tgraph has {', '.join(_DTYPES.values())})")
    return _DTYPES[onnx_type]


class Importer:
    def __init__(self, model, name: str):
        self.model = model
        self.g = Graph(_safe_graph_name(name))
        self.env: dict[str, object] = {}  # ONNX name -> Value or np.ndarray
        self.initializers: dict[str, np.ndarray] = {}
        self.const_names: set[str] = set()  # float initializers a tgraph export marked const
        self.params: dict[str, Value] = {}
        self.weights: dict[str, np.ndarray] = {}
        self.by_content: dict[tuple, Value] = {}  # (shape, dtype, bytes digest) -> param
        self.dim_source: dict[str, tuple[Value, int]] = {}
        self.node = None
        self._fresh = 0

    # ----- values ------------------------------------------------------------------------
    def get(self, name: str):
        if name == "":
            return None
        if name in self.env:
            return self.env[name]
        if name in self.initializers:
            arr = self.initializers[name]
            if arr.dtype.kind == "f" and arr.size > 1 and name not in self.const_names:
                # a weight: trainable, never folded
                return self._param(name, arr)
            return arr
        raise OnnxImportError(f"{self.where()}: input {name!r} is not defined before use")

    def value(self, x, dtype: str | None = None, onnx_name: str | None = None) -> Value:
        """x as a graph Value; a constant becomes a parameter (a float initializer with more
        than one element) or a constant, cast to ``dtype`` when given."""
        if isinstance(x, Value):
            if dtype and x.dtype != dtype:
                return tb.cast(x, dtype)
            return x
        if is_symbolic(x):
            raise OnnxImportError(f"{self.where()}: a shape with symbolic dims "
                               f"{to_dims(x)} is used as data; tgraph needs it known")
        arr = np.asarray(x)
        if dtype:
            arr = arr.astype(dtype)
        if (onnx_name and onnx_name in self.initializers and onnx_name not in self.const_names
                and arr.dtype.kind == "f" and arr.size > 1):
            return self._param(onnx_name, arr)
        return self.g.const(arr, name="const", dtype=str(arr.dtype))

    def _param(self, onnx_name: str, arr: np.ndarray) -> Value:
        key = (onnx_name, str(arr.dtype))
        if key not in self.params:
            tied = self._tied(arr)
            if tied is not None:  # the same weight stored twice: one parameter, read twice
                return tied
            name = self._param_name(onnx_name)
            with _root(self.g):
                v = self.g.param(name, arr.shape, str(arr.dtype))
            self.params[key] = v
            self.weights[v.name] = arr
            if len(np.unique(arr[:2].ravel())) > 1:  # constant-filled: never taken as a tie
                self.by_content[_content(arr)] = v
        return self.params[key]

    def _tied(self, arr: np.ndarray) -> Value | None:
        """A parameter already holding ``arr``, or its transpose (exporters store a tied
        embedding, read again transposed by the output head, as a second initializer), as
        a Value; None otherwise. Equal biases or LayerNorm gains made of one repeated
        value are not ties: only weights with varied entries count."""
        if len(np.unique(arr[:2].ravel())) < 2:
            return None
        same = self.by_content.get(_content(arr))
        if same is not None:
            return same
        if arr.ndim == 2:
            flipped = self.by_content.get(_content(np.ascontiguousarray(arr.T)))
            if flipped is not None:
                return tb.transpose(flipped, [1, 0])
        return None

    def _param_name(self, onnx_name: str) -> str:
        """``layers.0.linear1.weight`` → ``layers/0/linear1/weight``; an exporter's generated
        name (``onnx::MatMul_123``) → the consuming node's scope and op."""
        if re.fullmatch(r"[A-Za-z_][\w./]*", onnx_name):
            base = onnx_name.replace(".", "/")
        else:
            base = "/".join(p for p in (self.scope, f"{self.node.op_type}_weight") if p)
        name, i = base, 1
        while name in self.g._names:
            name = f"{base}_{i}"
            i += 1
        return name

    def const(self, x) -> np.ndarray:
        if isinstance(x, Value):
            raise OnnxImportError(f"{self.where()}: input must be known before running (a "
                               f"constant), but it is computed: {x.type}")
        return x

    def ints(self, x) -> list[int]:
        a = self.const(x)
        if is_symbolic(a):
            raise OnnxImportError(f"{self.where()}: needs int values, got symbolic {to_dims(a)}")
        return [int(v) for v in np.asarray(a).reshape(-1)]

    def where(self) -> str:
        n = self.node
        return f"ONNX node {n.name or '<unnamed>'!r} ({n.op_type})" if n is not None else "model"

    @property
    def scope(self) -> str:
        return scope_of(self.node) if self.node is not None else ""

    def positions(self, d, dtype: str) -> Value:
        """0..d−1 for a symbolic dim d read from a graph input's shape."""
        d = d.d if isinstance(d, Sym) else d
        if d not in self.dim_source:
            raise OnnxImportError(f"{self.where()}: cannot compute a range up to {d}: it is not "
                               "an axis of a graph input")
        v, axis = self.dim_source[d]
        return tb.apply("positions", v, axis=axis, dtype=dtype)

    def fresh_symbol(self) -> str:
        self._fresh += 1
        return f"D{self._fresh}"


def _content(arr: np.ndarray) -> tuple:
    return (arr.shape, str(arr.dtype), hashlib.sha256(np.ascontiguousarray(arr).tobytes()).digest())


def scope_of(node) -> str:
    for p in node.metadata_props:
        if p.key == "pkg.torch.onnx.name_scopes":
            try:
                parts = [s for s in ast.literal_eval(p.value) if isinstance(s, str)]
            except (ValueError, SyntaxError):
                break
            # cumulative module paths, then the op: ['', 'layers.0', 'layers.0.attn', 'linear']
            return _clean_scope(parts[-2:-1])
    parts = [p for p in (node.name or "").split("/") if p]
    return _clean_scope(parts[:-1])


def _clean_scope(parts) -> str:
    """``layers.0`` → ``layers/0``; characters a scope path cannot hold become ``_``."""
    out = []
    for p in parts:
        for q in p.split("."):
            q = re.sub(r"[^\w\-]", "_", q)[:80]
            if q:
                out.append(q)
    return "/".join(out)


def _safe_graph_name(name: str) -> str:
    return re.sub(r"[^\w\-. ]", "_", name)[:100] or "onnx"


class _root:
    """Build outside any scope (parameters are named by their own path)."""

    def __init__(self, g):
        self.g = g

    def __enter__(self):
        self.saved, self.g._scope = self.g._scope, []

    def __exit__(self, *exc):
        self.g._scope = self.saved


# ----- the op table ------------------------------------------------------------------------
IMPORTERS: dict[str, Callable] = {}


def onnx_op(*names):
    def add(fn):
        for n in names:
            IMPORTERS[n] = fn
        return fn

    return add


def attr(node, name, default=None):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            v = helper.get_attribute_value(a)
            return v.decode("utf-8", "replace") if isinstance(v, bytes) else v
    return default


def import_onnx(path, dims: dict[str, int] | None = None,
                limits: Limits = Limits()) -> tuple[Graph, dict[str, np.ndarray]]:
    """The graph and its weights (float initializers, by parameter name) from an .onnx
    file. ``dims`` fixes dynamic input axes by their dim_param (``{"T": 16}``) for models
    whose exporter baked a size into the shape arithmetic. Raises one TGraphError naming
    the node for anything it cannot express; nothing is written."""
    from pathlib import Path

    model = load_model(path, limits)
    return from_model(model, Path(path).stem, dims)


def from_model(model, name: str = "onnx",
               dims: dict[str, int] | None = None) -> tuple[Graph, dict[str, np.ndarray]]:
    from onnx import numpy_helper

    # exporters name every graph alike ("main_graph"): the file's name says more
    imp = Importer(model, model.graph.name if model.producer_name == "tgraph" else name)
    graph = model.graph
    opsets = {o.domain: o.version for o in model.opset_import}
    unsupported = sorted({n.op_type for n in graph.node if not _tagged(n) and (
        n.op_type not in IMPORTERS or n.domain not in ("", "ai.onnx"))})
    if unsupported:
        first = next(n for n in graph.node if n.op_type in unsupported)
        raise OnnxImportError(
            f"ONNX op {first.op_type!r} (node {first.name or '<unnamed>'!r}, domain "
            f"{first.domain or 'ai.onnx'}) is not supported; unsupported here: "
            f"{', '.join(unsupported)}; supported: {', '.join(sorted(IMPORTERS))}")
    imp.opset = opsets.get("", opsets.get("ai.onnx", 17))
    consts = {p.key: p.value for p in model.metadata_props}.get("tgraph.consts")
    if consts:
        try:
            imp.const_names = {c for c in json.loads(consts) if isinstance(c, str)}
        except (ValueError, TypeError):
            pass
    for t in graph.initializer:
        try:
            imp.initializers[t.name] = numpy_helper.to_array(t)
        except (ValueError, TypeError) as e:
            raise GraphFileError(f"initializer {t.name!r} cannot be read: {e}") from None
    init_names = set(imp.initializers)
    for vi in graph.input:
        if vi.name in init_names:
            continue
        tt = vi.type.tensor_type
        dtype = dtype_of(tt.elem_type, f"graph input {vi.name!r}")
        shape = []
        for d in tt.shape.dim:
            if d.HasField("dim_value"):
                shape.append(int(d.dim_value))
            elif dims and d.dim_param in dims:
                shape.append(int(dims[d.dim_param]))
            else:
                shape.append(_symbol(imp, d.dim_param))
        v = imp.g.input(_value_name(vi.name), shape, dtype)
        imp.env[vi.name] = v
        for axis, d in enumerate(v.shape):
            if isinstance(d, str) and d.isidentifier():
                imp.dim_source.setdefault(d, (v, axis))
    for node in graph.node:
        imp.node = node
        meta = {p.key: p.value for p in node.metadata_props}
        if "tgraph.node" in meta:  # a node tgraph exported: rebuilt whole at its last piece
            if "tgraph.op" in meta:
                _tgraph_node(imp, meta)
            continue
        ins = [imp.get(i) for i in node.input]
        with imp.g.scope(imp.scope):
            try:
                outs = IMPORTERS[node.op_type](imp, node, ins)
            except Unfoldable as e:
                raise OnnxImportError(f"{imp.where()}: shape arithmetic {e} is not a product of "
                                   "dims; tgraph's symbolic dims cannot follow it") from None
            except TGraphError as e:
                if "ONNX node" in str(e):
                    raise
                raise OnnxImportError(f"{imp.where()}: {e}") from None
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        for name, v in zip(node.output, outs):
            if name:
                imp.env[name] = v if isinstance(v, (Value, NeverNaN)) else as_const(v)
    imp.node = None
    for vo in graph.output:
        v = imp.get(vo.name)
        if not isinstance(v, Value):
            v = imp.value(v, onnx_name=vo.name)
        imp.g.set_output(_value_name(vo.name), v)
    meta = {p.key: p.value for p in model.metadata_props}.get("tgraph.meta")
    if meta:  # a tgraph export's graph meta: plain JSON data
        try:
            meta = json.loads(meta)
        except ValueError:
            meta = None
        if isinstance(meta, dict):
            imp.g.meta.update(meta)
    imp.g.meta["source"] = {"format": "onnx", "producer": model.producer_name[:100]}
    hoist_shared(imp.g)
    return imp.g.validate(), imp.weights


def _within(scope: str, root: str) -> bool:
    return not root or scope == root or scope.startswith(root + "/")


def _common(scopes) -> str:
    parts = [s.split("/") if s else [] for s in scopes]
    out = []
    for level in zip(*parts):
        if len(set(level)) > 1:
            break
        out.append(level[0])
    return "/".join(out)


def hoist_shared(g: Graph) -> None:
    """A node that reads only values from outside its scope and whose result several
    sibling scopes use (the encoder memory transposed once for every decoder layer's
    cross-attention) moves up to the innermost scope holding every use, as autodiff
    places its sums: otherwise the first layer differs from the others and they do not
    fold."""
    users = g.users()
    for n in reversed(g.nodes):
        uses = [u.scope for v in n.outputs for u in users.get(v, [])]
        if not uses:
            continue
        home = _common([*uses, n.scope])
        if home == n.scope or not all(not _within(v.scope, n.scope) or v.node is None
                                      for v in n.inputs if v.node is not None):
            continue
        if any(_within(u, n.scope) for u in uses) and len(set(uses)) > 1:
            n.scope = home


def _tagged(node) -> bool:
    return any(p.key == "tgraph.node" for p in node.metadata_props)


def _tgraph_node(imp: Importer, meta: dict) -> None:
    """Rebuild the tgraph node an export tagged (its op, attrs and scope), checked by the
    op's shape rule like a node of a graph file."""
    import json

    try:
        op, attrs = meta["tgraph.op"], json.loads(meta["tgraph.attrs"])
        ins, outs = json.loads(meta["tgraph.inputs"]), json.loads(meta["tgraph.outputs"])
        scope = meta["tgraph.node"].rpartition("/")[0]
        if not (isinstance(op, str) and isinstance(attrs, dict)
                and all(isinstance(x, str) for x in [*ins, *outs])):
            raise ValueError("bad types")
    except (KeyError, ValueError, TypeError) as e:
        raise OnnxImportError(f"{imp.where()}: unreadable tgraph metadata ({e})") from None
    values = [imp.value(imp.get(i), onnx_name=i) for i in ins]
    with imp.g.scope(_clean_scope(scope.split("/"))):
        out = imp.g.apply(op, values, attrs, name=meta["tgraph.node"].rpartition("/")[2][:80])
    out = out if isinstance(out, tuple) else (out,)
    if len(out) != len(outs):
        raise OnnxImportError(f"{imp.where()}: tgraph op {op!r} gave {len(out)} outputs, the "
                           f"file lists {len(outs)}")
    imp.env.update(zip(outs, out))


def _symbol(imp: Importer, param: str) -> str:
    """A dim_param as a tgraph symbol: kept if it is a name or a product (``B``, ``2*T``)."""
    try:
        if param:
            return norm_dim(param)
    except ValueError:
        pass
    return imp.fresh_symbol()


def _value_name(name: str) -> str:
    return re.sub(r"[^\w\-./:]", "_", name)[:200] or "value"


# ----- folding helpers ---------------------------------------------------------------------
def all_const(ins) -> bool:
    return all(not isinstance(x, Value) for x in ins if x is not None)


def _np_dtype(to: int) -> str:
    return dtype_of(to, "Cast")


# ----- elementwise -------------------------------------------------------------------------
_BINARY = {"Add": ("add", np.add), "Sub": ("sub", np.subtract), "Mul": ("mul", np.multiply),
           "Div": ("div", None), "Pow": ("pow", np.power)}


def _fold_div(a, b):
    if is_symbolic(a) or is_symbolic(b) or (a.dtype.kind in "iu" and b.dtype.kind in "iu"):
        q = np.asarray(a, dtype=object) // np.asarray(b, dtype=object)
        return _tidy(q, a, b)
    return np.divide(a, b).astype(np.result_type(a, b))


def _tidy(out, *ins):
    """Object results with no symbol left go back to the inputs' numeric dtype."""
    out = np.asarray(out)
    if out.dtype == object and not any(isinstance(v, Sym) for v in out.reshape(-1)):
        numeric = [x.dtype for x in ins if isinstance(x, np.ndarray) and x.dtype != object]
        return out.astype(numeric[0] if numeric else np.int64)
    return out


def binary_operands(imp, node, a, b):
    """Both operands as Values of one dtype (a constant takes its partner's dtype)."""
    names = list(node.input)
    dt = a.dtype if isinstance(a, Value) else b.dtype
    return (imp.value(a, dt, names[0]), imp.value(b, dt, names[1]))


@onnx_op("Add", "Sub", "Mul", "Div", "Pow")
def _binary(imp, node, ins):
    a, b = ins
    op, fn = _BINARY[node.op_type]
    if all_const(ins):
        if op == "div":
            return _fold_div(a, b)
        with np.errstate(all="ignore"):
            return _tidy(fn(a if is_symbolic(a) else np.asarray(a),
                            b if is_symbolic(b) else np.asarray(b)), a, b)
    if op == "pow" and not isinstance(b, Value) and np.asarray(b).size == 1:
        p = float(np.asarray(b).reshape(()))
        if p == 2:
            return a * a
        if p == 0.5:
            return tb.apply("sqrt", a)
        if p == 1:
            return a
    if op == "div" and not isinstance(b, Value) and a.dtype in FLOAT_DTYPES:
        # x / c as x · (1/c): the same number tgraph's scale ops use, one fewer division
        return imp.value(a) * imp.value(np.asarray(1 / np.asarray(b, np.float64), a.dtype))
    va, vb = binary_operands(imp, node, a, b)
    return imp.g.apply(op, [va, vb])


_UNARY = {"Sqrt": ("sqrt", np.sqrt), "Erf": ("erf", None), "Tanh": ("tanh", np.tanh),
          "Exp": ("exp", np.exp), "Log": ("log", np.log), "Neg": ("neg", np.negative),
          "Relu": ("relu", None), "Sigmoid": ("sigmoid", None), "Abs": ("abs", np.abs),
          "Sin": ("sin", np.sin), "Cos": ("cos", np.cos)}


@onnx_op(*_UNARY)
def _unary(imp, node, ins):
    op, fn = _UNARY[node.op_type]
    (x,) = ins
    if all_const(ins) and fn is not None and not is_symbolic(x):
        return fn(x).astype(x.dtype)
    return tb.apply(op, imp.value(x, onnx_name=node.input[0]))


@onnx_op("Mod")
def _mod(imp, node, ins):
    a, b = (imp.const(x) for x in ins)  # shape arithmetic only (head-size checks)
    if is_symbolic(a) or is_symbolic(b):
        raise Unfoldable("mod of symbolic dims")
    return (np.fmod if attr(node, "fmod", 0) else np.mod)(a, b)


@onnx_op("Reciprocal")
def _reciprocal(imp, node, ins):
    (x,) = ins
    if all_const(ins):
        return (1 / x).astype(x.dtype)
    return imp.value(np.asarray(1, x.dtype)) / x


@onnx_op("Gelu")
def _gelu(imp, node, ins):
    return tb.apply("gelu", imp.value(ins[0]), approximate=attr(node, "approximate", "none"))


@onnx_op("Identity", "Dropout")
def _identity(imp, node, ins):
    return ins[0] if node.op_type == "Identity" else [ins[0]]


@onnx_op("Constant")
def _constant(imp, node, ins):
    from onnx import numpy_helper

    a = node.attribute[0]
    if a.name == "value":
        from tgraph.interop.onnx_read import tensor_bytes

        tensor_bytes(a.t, Limits())
        return numpy_helper.to_array(a.t)
    if a.name in ("value_float", "value_int"):
        return np.asarray(a.f if a.name == "value_float" else a.i,
                          np.float32 if a.name == "value_float" else np.int64)
    if a.name in ("value_floats", "value_ints"):
        return np.asarray(list(a.floats) if a.name == "value_floats" else list(a.ints),
                          np.float32 if a.name == "value_floats" else np.int64)
    raise OnnxImportError(f"{imp.where()}: Constant with {a.name} is not supported")


@onnx_op("Cast")
def _cast(imp, node, ins):
    (x,), to = ins, _np_dtype(attr(node, "to"))
    if all_const(ins):
        if is_symbolic(x):
            if to in ("int32", "int64"):
                return x
            raise Unfoldable(f"cast of symbolic dims {to_dims(x)} to {to}")
        return np.asarray(x).astype(to)
    return x if x.dtype == to else tb.cast(x, to)


_COMPARE = {"Equal": "==", "Less": "<", "LessOrEqual": "<=", "Greater": ">",
            "GreaterOrEqual": ">="}


@onnx_op(*_COMPARE)
def _compare(imp, node, ins):
    a, b = ins
    cmp = _COMPARE[node.op_type]
    if all_const(ins):
        if cmp == "==":
            out = np.asarray(np.asarray(a, dtype=object) == np.asarray(b, dtype=object))
            return out.astype(bool)
        return np.asarray(eval_compare(cmp, a, b)).astype(bool)
    va, vb = binary_operands(imp, node, a, b)
    return tb.compare(va, vb, cmp)


def eval_compare(cmp, a, b):
    import operator

    ops = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
    return ops[cmp](np.asarray(a), np.asarray(b))


@onnx_op("Not")
def _not(imp, node, ins):
    (x,) = ins
    if all_const(ins):
        return ~np.asarray(x, bool)
    return tb.compare(x, imp.value(np.asarray(False)), "==")


@onnx_op("And", "Or")
def _and_or(imp, node, ins):
    a, b = ins
    if all_const(ins):
        return (np.logical_and if node.op_type == "And" else np.logical_or)(a, b)
    a, b = imp.value(a), imp.value(b)
    if node.op_type == "And":
        return tb.where(a, b, imp.value(np.asarray(False)))
    return tb.where(a, imp.value(np.asarray(True)), b)


class NeverNaN:
    """IsNaN of a softmax: tgraph's softmax gives zeros, never NaN, on a fully masked row,
    so ``Where(IsNaN(p), 0, p)`` (how a tgraph export guards ONNX's Softmax) is just p."""


@onnx_op("IsNaN")
def _isnan(imp, node, ins):
    (x,) = ins
    if all_const(ins):
        return np.isnan(x)
    if x.node is not None and x.node.op == "softmax":
        return NeverNaN()
    return tb.compare(x, x, "!=")


@onnx_op("Where")
def _where(imp, node, ins):
    c, a, b = ins
    if isinstance(c, NeverNaN):
        return b
    if all_const(ins):
        return _tidy(np.where(np.asarray(c, bool), np.asarray(a, dtype=object),
                              np.asarray(b, dtype=object)), a, b)
    dt = next(x.dtype for x in (a, b) if isinstance(x, Value)) if not all_const([a, b]) \
        else np.asarray(a).dtype.name
    return tb.where(imp.value(c, "bool"), imp.value(a, dt, node.input[1]),
                    imp.value(b, dt, node.input[2]))


@onnx_op("Max", "Min")
def _max_min(imp, node, ins):
    if all_const(ins):
        fn = np.maximum if node.op_type == "Max" else np.minimum
        out = ins[0]
        for x in ins[1:]:
            out = fn(out, x)
        return out
    dt = next(x.dtype for x in ins if isinstance(x, Value))
    vals = [imp.value(x, dt, n) for x, n in zip(ins, node.input)]
    out = vals[0]
    for v in vals[1:]:
        out = tb.apply("maximum", out, v) if node.op_type == "Max" \
            else -tb.apply("maximum", -out, -v)
    return out


# ----- linear algebra and normalisation ------------------------------------------------------
@onnx_op("MatMul")
def _matmul(imp, node, ins):
    a, b = ins
    if all_const(ins):
        return np.matmul(a, b)
    dt = a.dtype if isinstance(a, Value) else b.dtype
    va, vb = imp.value(a, dt, node.input[0]), imp.value(b, dt, node.input[1])
    if va.type.rank == 1 or vb.type.rank == 1:
        raise OnnxImportError(f"{imp.where()}: MatMul of a vector is not supported "
                           f"({va.type} @ {vb.type})")
    return va @ vb


@onnx_op("Gemm")
def _gemm(imp, node, ins):
    a, b, *c = ins
    alpha, beta = attr(node, "alpha", 1.0), attr(node, "beta", 1.0)

    def side(x, name, trans):
        if trans and not isinstance(x, Value):  # a weight stored transposed: store it upright
            return imp.value(np.ascontiguousarray(np.asarray(x).T), onnx_name=name)
        v = imp.value(x, onnx_name=name)
        return tb.transpose(v, (1, 0)) if trans else v

    y = side(a, node.input[0], attr(node, "transA", 0)) @ side(b, node.input[1],
                                                                attr(node, "transB", 0))
    if alpha != 1:
        y = y * imp.value(np.asarray(alpha, y.dtype))
    if c and c[0] is not None:
        bias = imp.value(c[0], y.dtype, node.input[2])
        y = y + (bias * imp.value(np.asarray(beta, y.dtype)) if beta != 1 else bias)
    return y


@onnx_op("Softmax")
def _softmax(imp, node, ins):
    (x,) = ins
    axis = attr(node, "axis", -1 if imp.opset >= 13 else 1)
    if imp.opset < 13 and axis % x.type.rank != x.type.rank - 1:
        raise OnnxImportError(f"{imp.where()}: opset {imp.opset} Softmax over trailing axes "
                           f"from {axis} is not supported")
    return tb.softmax(imp.value(x), axis)


@onnx_op("SoftmaxCrossEntropyLoss")
def _softmax_cross_entropy(imp, node, ins):
    scores, labels, *weights = ins
    if weights and weights[0] is not None or attr(node, "ignore_index") is not None:
        raise OnnxImportError(f"{imp.where()}: class weights and ignore_index are not supported")
    if attr(node, "reduction", "mean") != "mean" or len([o for o in node.output if o]) > 1:
        raise OnnxImportError(f"{imp.where()}: only reduction='mean' with one output is supported")
    x = imp.value(scores)
    if x.type.rank != 2:  # [N, C, d...]: classes move last, as tgraph's op has them
        x = tb.transpose(x, [0, *range(2, x.type.rank), 1])
    return tb.cross_entropy(x, imp.value(labels))


@onnx_op("LayerNormalization")
def _layernorm(imp, node, ins):
    x, scale, *bias = ins
    if len([o for o in node.output if o]) > 1:
        raise OnnxImportError(f"{imp.where()}: LayerNormalization's Mean/InvStdDev outputs are "
                           "not supported")
    x = imp.value(x)
    if attr(node, "axis", -1) % x.type.rank != x.type.rank - 1:
        raise OnnxImportError(f"{imp.where()}: LayerNormalization over axis "
                           f"{attr(node, 'axis')} (not the last) is not supported")
    gamma = imp.value(scale, x.dtype, node.input[1])
    beta = (imp.value(bias[0], x.dtype, node.input[2]) if bias and bias[0] is not None
            else imp.value(np.zeros(x.shape[-1:], x.dtype)))
    return tb.apply("layernorm", x, gamma, beta, eps=float(attr(node, "epsilon", 1e-5)))


def _axes(imp, node, ins, rank):
    """Reduce/Squeeze/Unsqueeze axes: an attribute before opset 13/18, else the 2nd input."""
    axes = attr(node, "axes")
    if axes is None and len(ins) > 1 and ins[1] is not None:
        axes = imp.ints(ins[1])
    return None if axes is None else [a % rank if rank else a for a in axes]


_REDUCE = {"ReduceMean": ("mean", np.mean), "ReduceSum": ("sum", np.sum),
           "ReduceMax": ("max", np.max), "ReduceProd": (None, np.prod)}


@onnx_op(*_REDUCE)
def _reduce(imp, node, ins):
    x = ins[0]
    keep = bool(attr(node, "keepdims", 1))
    rank = x.type.rank if isinstance(x, Value) else np.ndim(x)
    axes = _axes(imp, node, ins, rank)
    if axes == [] and attr(node, "noop_with_empty_axes", 0):
        return x
    op, fn = _REDUCE[node.op_type]
    if all_const([x]):
        return np.asarray(fn(x, axis=None if axes is None else tuple(axes), keepdims=keep))
    if op is None:
        raise OnnxImportError(f"{imp.where()}: {node.op_type} of computed values is not supported")
    return imp.g.apply(op, [x], {"axes": axes, "keepdims": keep})


# ----- shapes and movement ---------------------------------------------------------------------
@onnx_op("Shape")
def _shape(imp, node, ins):
    (x,) = ins
    shape = x.shape if isinstance(x, Value) else np.shape(x)
    start, end = attr(node, "start", 0), attr(node, "end", None)
    return dims_array(list(shape)[start:end])


@onnx_op("Size")
def _size(imp, node, ins):
    (x,) = ins
    shape = x.shape if isinstance(x, Value) else np.shape(x)
    out = 1
    for d in shape:
        out = dim_mul(out, d)
    return dims_array([out]).reshape(())


@onnx_op("Reshape")
def _reshape(imp, node, ins):
    x, shape = ins
    target = to_dims(imp.const(shape))
    in_shape = x.shape if isinstance(x, Value) else np.shape(x)
    if not attr(node, "allowzero", 0):
        target = [in_shape[i] if d == 0 else d for i, d in enumerate(target)]
    if all_const([x]):
        if any(isinstance(d, str) for d in target):
            raise Unfoldable(f"reshape of a constant to {target}")
        return np.reshape(x, target)  # a shape tensor too (an object array of dims)
    return tb.reshape(x, target)


def _squeeze_shape(shape, axes):
    return [d for i, d in enumerate(shape) if i not in axes]


@onnx_op("Squeeze")
def _squeeze(imp, node, ins):
    x = ins[0]
    shape = list(x.shape if isinstance(x, Value) else np.shape(x))
    axes = _axes(imp, node, ins, len(shape))
    if axes is None:
        axes = [i for i, d in enumerate(shape) if d == 1]
    if all_const([x]):
        return np.squeeze(x, axis=tuple(axes)) if axes else x
    return tb.reshape(x, _squeeze_shape(shape, axes))


@onnx_op("Unsqueeze")
def _unsqueeze(imp, node, ins):
    x = ins[0]
    shape = list(x.shape if isinstance(x, Value) else np.shape(x))
    axes = sorted(_axes(imp, node, ins, len(shape) + len(_raw_axes(imp, node, ins))))
    if all_const([x]):
        out = np.asarray(x) if not is_symbolic(x) else x
        for a in axes:
            out = np.expand_dims(out, a)
        return out
    for a in axes:
        shape.insert(a, 1)
    return tb.reshape(x, shape)


def _raw_axes(imp, node, ins):
    axes = attr(node, "axes")
    return axes if axes is not None else imp.ints(ins[1])


@onnx_op("Transpose")
def _transpose(imp, node, ins):
    (x,) = ins
    rank = x.type.rank if isinstance(x, Value) else np.ndim(x)
    perm = attr(node, "perm") or list(reversed(range(rank)))
    if all_const(ins):
        return np.transpose(x, perm)
    return tb.transpose(x, list(perm))


@onnx_op("Concat")
def _concat(imp, node, ins):
    axis = attr(node, "axis")
    ins = [x for x in ins if x is not None]
    if all_const(ins):
        parts = [np.asarray(x, dtype=object) if any(is_symbolic(y) for y in ins) else x
                 for x in ins]
        parts = [p for p in parts if np.size(p) or np.ndim(p) != 1]
        return _tidy(np.concatenate(parts, axis=axis), *ins) if parts else ins[0]
    dt = next(x.dtype for x in ins if isinstance(x, Value))
    vals = [imp.value(x, dt, n) for x, n in zip(ins, node.input)]
    vals = [v for v in vals if 0 not in v.shape]
    return vals[0] if len(vals) == 1 else tb.concat(*vals, axis=axis)


@onnx_op("Split")
def _split(imp, node, ins):
    x = ins[0]
    axis = attr(node, "axis", 0)
    sizes = attr(node, "split")
    if sizes is None and len(ins) > 1 and ins[1] is not None:
        sizes = imp.ints(ins[1])
    d = x.shape[axis] if isinstance(x, Value) else np.shape(x)[axis]
    n = len(node.output)
    if sizes is None:
        if not isinstance(d, int):
            raise OnnxImportError(f"{imp.where()}: Split of symbolic dim {d} needs sizes")
        step = -(-d // n)
        sizes = [min(step, d - i * step) for i in range(n)]
    if all_const([x]):
        return np.split(x, np.cumsum(sizes)[:-1], axis=axis)
    parts = tb.split(x, list(sizes), axis=axis)
    return list(parts) if isinstance(parts, tuple) else [parts]


@onnx_op("Slice")
def _slice(imp, node, ins):
    x, starts, ends, *rest = ins
    starts, ends = imp.ints(starts), to_dims(imp.const(ends))
    rank = x.type.rank if isinstance(x, Value) else np.ndim(x)
    axes = imp.ints(rest[0]) if rest and rest[0] is not None else list(range(len(starts)))
    steps = imp.ints(rest[1]) if len(rest) > 1 and rest[1] is not None else [1] * len(starts)
    if any(s != 1 for s in steps):
        raise OnnxImportError(f"{imp.where()}: Slice with steps {steps} is not supported")
    shape = list(x.shape if isinstance(x, Value) else np.shape(x))
    out = x
    for start, stop, axis in zip(starts, ends, axes):
        axis %= rank
        d = shape[axis]
        if isinstance(stop, str):  # a symbolic end: the whole axis when it is that dim
            if stop != d or start != 0:
                raise OnnxImportError(f"{imp.where()}: Slice [{start}:{stop}] of dim {d} cannot "
                                   "be followed symbolically")
            continue
        if isinstance(d, int):
            r = range(d)[slice(start, stop)]
            if r.start == 0 and r.stop == d:
                continue
            start, stop = r.start, r.stop
        elif stop >= 2**62:
            stop = None
            if start == 0:
                continue
        if all_const([out]):
            idx = [slice(None)] * rank
            idx[axis] = slice(start, stop)
            out = np.asarray(out)[tuple(idx)]
        else:
            out = tb.slice(out, axis, start, stop)
    return out


@onnx_op("Gather")
def _gather(imp, node, ins):
    data, idx = ins
    axis = attr(node, "axis", 0)
    if all_const(ins):
        return np.take(data, np.asarray(idx, np.int64), axis=axis)
    if isinstance(idx, Value):
        table = imp.value(data, onnx_name=node.input[0])
        if axis % table.type.rank != 0:
            raise OnnxImportError(f"{imp.where()}: Gather of computed indices on axis {axis} "
                               "is not supported")
        return tb.gather(table, idx)
    # constant indices into a computed tensor: slices
    rank = data.type.rank
    axis %= rank
    picks = np.asarray(idx, np.int64)
    d = data.shape[axis]
    pieces = [tb.slice(data, axis, int(i) % d if isinstance(d, int) else int(i),
                       (int(i) % d if isinstance(d, int) else int(i)) + 1)
              for i in picks.reshape(-1)]
    out = pieces[0] if len(pieces) == 1 else tb.concat(*pieces, axis=axis)
    shape = list(data.shape)
    return tb.reshape(out, shape[:axis] + list(picks.shape) + shape[axis + 1:])


@onnx_op("Expand")
def _expand(imp, node, ins):
    x, shape = ins
    target = to_dims(imp.const(shape))
    in_shape = x.shape if isinstance(x, Value) else np.shape(x)
    out = broadcast(tuple(in_shape), tuple(target))
    if out is None:
        raise OnnxImportError(f"{imp.where()}: cannot expand {list(in_shape)} to {target}")
    if all_const([x]) and not any(isinstance(d, str) for d in out):
        return np.broadcast_to(x, out).copy()
    v = imp.value(x, onnx_name=node.input[0])
    return v if tuple(v.shape) == tuple(out) else tb.broadcast_to(v, list(out))


@onnx_op("ConstantOfShape")
def _constant_of_shape(imp, node, ins):
    from onnx import numpy_helper

    (shape,) = ins
    t = attr(node, "value")
    fill = numpy_helper.to_array(t).reshape(()) if t is not None else np.asarray(0, np.float32)
    target = to_dims(imp.const(shape))
    if all(isinstance(d, int) for d in target):
        if np.prod(target, dtype=np.int64) * fill.dtype.itemsize > Limits().tensor_bytes:
            raise OnnxImportError(f"{imp.where()}: a constant of shape {target} is too large")
        return np.full(target, fill, dtype=fill.dtype)
    return tb.broadcast_to(imp.value(fill), target)


@onnx_op("Range")
def _range(imp, node, ins):
    start, limit, delta = (imp.const(x) for x in ins)
    if not any(is_symbolic(x) for x in (start, limit, delta)):
        return np.arange(start, limit, delta).astype(np.asarray(start).dtype)
    lim = np.asarray(limit).reshape(())[()]
    if int(np.asarray(start).reshape(())) != 0 or int(np.asarray(delta).reshape(())) != 1:
        raise Unfoldable(f"range({start}, {lim}, {delta})")
    return imp.positions(lim, str(np.asarray(start).dtype) if start.dtype != object
                         else "int64")


@onnx_op("Trilu")
def _trilu(imp, node, ins):
    x, *k = ins
    k = imp.ints(k[0])[0] if k and k[0] is not None else 0
    upper = attr(node, "upper", 1)
    if all_const([x]) and not is_symbolic(x):
        return np.triu(x, k) if upper else np.tril(x, k)
    x = imp.value(x)
    t, s = x.shape[-2:]
    if (upper, k) not in ((0, 0), (1, 1)) or (t != s and not (isinstance(t, int)
                                                              and isinstance(s, int))):
        raise OnnxImportError(f"{imp.where()}: Trilu upper={upper} k={k} on {x.type} is not "
                           "supported (lower k=0 and upper k=1 are)")
    data = x if x.dtype in FLOAT_DTYPES else tb.cast(x, "float32")  # bool masks, say
    lower = tb.mask(data, causal=True, fill="0")  # keeps j ≤ i: tril(x, 0)
    out = lower if not upper else data - lower
    return out if out.dtype == x.dtype else tb.cast(out, x.dtype)
