"""A fused node's body -> one CuPy ``ElementwiseKernel`` (CUDA C), one launch per node.

The ops' scalar formulas are Python expressions (``OpDef.scalar``), the same the Numba
generator compiles. Here each is parsed with ``ast`` and printed as C: arithmetic as is,
``**`` as ``pow``, ``a if c else b`` as ``c ? a : b``, ``and``/``or``/``not`` as
``&&``/``||``/``!``, ``/`` as true division in double, ``math.f(x)`` as CUDA's ``f(x)``
from a fixed list, numbers as double literals. Anything else is refused (``Untranslatable``) and the node runs op by op,
as does a body with a trailing reduction (ElementwiseKernel maps elements one to one).
CuPy broadcasts the inputs and caches the compiled kernel by its source, on disk too.
The C printer is checked on the CPU by compiling the same text with a C compiler
(tests/test_cuda_codegen.py); on a GPU it runs through ``cupy.ElementwiseKernel``.
"""

from __future__ import annotations

import ast
import hashlib

from tgraph.ops.registry import get_op

#: math functions a formula may call: the same name in C's and CUDA's math library (but
#: ndtr, Φ, which CUDA calls normcdf)
MATH = frozenset({"exp", "log", "sqrt", "tanh", "erf", "erfc", "sin", "cos", "fabs",
                  "isnan", "isinf", "isfinite", "ndtr"})
#: a formula's name for a function CUDA's math library calls otherwise
_C_NAME = {"ndtr": "normcdf"}
_BINARY = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*"}
_COMPARE = {ast.Gt: ">", ast.GtE: ">=", ast.Lt: "<", ast.LtE: "<=", ast.Eq: "==",
            ast.NotEq: "!="}
_CTYPE = {"float32": "float", "float64": "double", "float16": "float16", "bool": "bool",
          "int32": "int", "int64": "long long"}


class Untranslatable(Exception):
    """A formula, or a body, that has no C form here: the node runs op by op."""


def c_expr(python: str) -> str:
    """A scalar formula (a Python expression over names) as a C expression."""
    try:
        tree = ast.parse(python, mode="eval").body
    except SyntaxError as e:
        raise Untranslatable(f"not an expression: {python[:80]}") from e
    return _c(tree)


def _c(e: ast.AST) -> str:
    if isinstance(e, ast.Name):
        return e.id
    if isinstance(e, ast.Constant):
        if isinstance(e.value, bool):
            return "true" if e.value else "false"
        if isinstance(e.value, (int, float)):
            return repr(float(e.value))
    if isinstance(e, ast.BinOp):
        a, b = _c(e.left), _c(e.right)
        if isinstance(e.op, ast.Pow):
            return f"pow((double)({a}), (double)({b}))"
        if isinstance(e.op, ast.Div):  # Python's true division, for ints too
            return f"((double)({a}) / (double)({b}))"
        if type(e.op) in _BINARY:
            return f"({a} {_BINARY[type(e.op)]} {b})"
    if isinstance(e, ast.UnaryOp):
        op = {ast.USub: "-", ast.UAdd: "+", ast.Not: "!"}.get(type(e.op))
        if op:
            return f"({op}{_c(e.operand)})"
    if isinstance(e, ast.BoolOp):
        return "(" + (" && " if isinstance(e.op, ast.And) else " || ").join(
            _c(v) for v in e.values) + ")"
    if isinstance(e, ast.Compare) and all(type(o) in _COMPARE for o in e.ops):
        terms = [e.left, *e.comparators]
        return "(" + " && ".join(f"({_c(a)} {_COMPARE[type(o)]} {_c(b)})"
                                 for a, o, b in zip(terms, e.ops, terms[1:])) + ")"
    if isinstance(e, ast.IfExp):
        return f"({_c(e.test)} ? {_c(e.body)} : {_c(e.orelse)})"
    if isinstance(e, ast.Call) and not e.keywords:
        return _call(e)
    raise Untranslatable(f"no C form for {ast.unparse(e)[:80]}")


def _call(e: ast.Call) -> str:
    f, args = e.func, e.args
    if (isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name)
            and f.value.id == "math" and f.attr in MATH):
        name = _C_NAME.get(f.attr, f.attr)
        return f"{name}({', '.join(f'(double)({_c(a)})' for a in args)})"
    if isinstance(f, ast.Name) and f.id == "abs" and len(args) == 1:
        return f"fabs((double)({_c(args[0])}))"
    if isinstance(f, ast.Name) and f.id in ("min", "max") and len(args) == 2:
        return f"f{f.id}((double)({_c(args[0])}), (double)({_c(args[1])}))"
    if (isinstance(f, ast.Name) and f.id == "float" and len(args) == 1
            and isinstance(args[0], ast.Constant)):  # _literal's inf and nan
        special = {"inf": "INFINITY", "-inf": "(-INFINITY)", "nan": "NAN"}
        if str(args[0].value) in special:
            return special[str(args[0].value)]
    raise Untranslatable(f"no C form for {ast.unparse(e)[:80]}")


def elementwise_parts(attrs: dict, in_dtypes: list[str], out_dtypes: list[str]):
    """(input params, output params, body) of the ElementwiseKernel for a fused body:
    ``T in0, ...``, ``T out0, ...`` and C++ statements, each body value a local
    (``auto``: double, or bool for a comparison), outputs cast by their assignment."""
    from tgraph.codegen.numba_cpu import _literal

    n = len(in_dtypes)
    if any(e["op"] in ("sum", "mean") for e in attrs["body"]):
        raise Untranslatable("a body with a reduction")
    try:
        in_params = ", ".join(f"{_CTYPE[d]} in{k}" for k, d in enumerate(in_dtypes))
        out_params = ", ".join(f"{_CTYPE[d]} out{k}" for k, d in enumerate(out_dtypes))
    except KeyError as e:
        raise Untranslatable(f"no C type for {e.args[0]}") from None
    names = [f"in{k}" for k in range(n)]
    lines = []
    for k, entry in enumerate(attrs["body"]):
        refs = [_literal(a) if isinstance(a, dict) else names[a] for a in entry["args"]]
        formula = get_op(entry["op"]).scalar(refs, **entry.get("attrs", {}))
        if formula is None:
            raise Untranslatable(f"{entry['op']} has no scalar formula")
        lines.append(f"auto v{k} = {c_expr(formula)};")
        names.append(f"v{k}")
    lines += [f"out{k} = {names[ref]};" for k, ref in enumerate(attrs["outputs"])]
    return in_params, out_params, "\n".join(lines)


class CupyFusedKernel:
    """A fused node on CuPy: one ElementwiseKernel, built on first call."""

    def __init__(self, node):
        self.parts = elementwise_parts(node.attrs, [v.dtype for v in node.inputs],
                                       [v.dtype for v in node.outputs])
        digest = hashlib.sha256("\n".join(self.parts).encode()).hexdigest()[:16]
        self.name = f"tgraph_fused_{digest}"
        self.kernel = None

    def __call__(self, *arrays):
        if self.kernel is None:
            import cupy

            self.kernel = cupy.ElementwiseKernel(*self.parts, name=self.name)
        return self.kernel(*arrays)
