"""Elementwise ops: binary arithmetic with broadcasting, unary maths, activations, where, cast.

Binary ops need both inputs of one dtype: no silent promotion, so a float64 gradient check
stays float64 all the way through. Python numbers are lifted to the partner's dtype.
"""

from __future__ import annotations

import math

from tgraph.ops.registry import OpDef, register_op
from tgraph.errors import ShapeError
from tgraph.shapes import FLOAT_DTYPES, broadcast, fmt_shape
from tgraph.types import TensorType


def broadcast_types(types, op: str) -> TensorType:
    dtypes = {t.dtype for t in types}
    if len(dtypes) != 1:
        raise ShapeError(f"{op} needs inputs of one dtype, got {', '.join(t.dtype for t in types)}")
    shape = types[0].shape
    for t in types[1:]:
        out = broadcast(shape, t.shape)
        if out is None:
            raise ShapeError(f"{op} cannot broadcast {fmt_shape(shape)} with {fmt_shape(t.shape)}")
        shape = out
    return TensorType(types[0].dtype, shape)


def need_float(t: TensorType, op: str) -> TensorType:
    if t.dtype not in FLOAT_DTYPES:
        raise ShapeError(f"{op} needs a float input, got {t.dtype}")
    return t


class Binary(OpDef):
    symbol = "?"

    @property
    def signature(self):
        return f"{self.name}(a, b) -> broadcast(a, b)"

    def infer(self, types, **attrs):
        return broadcast_types(types, self.name)

    def label(self, **attrs):
        return self.symbol


def _binary(name, symbol, fn, doc):
    cls = type(name.title(), (Binary,), {"name": name, "symbol": symbol, "doc": doc,
                                         "kernel": lambda self, xp, a, b: fn(xp, a, b)})
    return register_op(cls)


Add = _binary("add", "+", lambda xp, a, b: a + b, "a + b with broadcasting")
Sub = _binary("sub", "−", lambda xp, a, b: a - b, "a − b with broadcasting")
Mul = _binary("mul", "×", lambda xp, a, b: a * b, "a × b with broadcasting")
Div = _binary("div", "÷", lambda xp, a, b: a / b, "a ÷ b with broadcasting")
Pow = _binary("pow", "^", lambda xp, a, b: a ** b, "a ** b with broadcasting")
Maximum = _binary("maximum", "max", lambda xp, a, b: xp.maximum(a, b), "elementwise max(a, b)")


class Unary(OpDef):
    float_only = True

    @property
    def signature(self):
        return f"{self.name}(x) -> like x"

    def infer(self, types, **attrs):
        (t,) = types
        return need_float(t, self.name) if self.float_only else t


def _unary(name, fn, doc, float_only=True, flops_per=1):
    cls = type(name.title(), (Unary,), {
        "name": name, "doc": doc, "float_only": float_only,
        "kernel": lambda self, xp, x: fn(xp, x),
        "flops": lambda self, i, o, **a: flops_per * math.prod(o[0]),
    })
    return register_op(cls)


Neg = _unary("neg", lambda xp, x: -x, "−x", float_only=False)
Exp = _unary("exp", lambda xp, x: xp.exp(x), "e^x")
Log = _unary("log", lambda xp, x: xp.log(x), "natural logarithm")
Sqrt = _unary("sqrt", lambda xp, x: xp.sqrt(x), "√x")
Rsqrt = _unary("rsqrt", lambda xp, x: 1 / xp.sqrt(x), "1/√x", flops_per=2)
Tanh = _unary("tanh", lambda xp, x: xp.tanh(x), "hyperbolic tangent")
Sin = _unary("sin", lambda xp, x: xp.sin(x), "sine (sinusoidal and rotary positions)")
Cos = _unary("cos", lambda xp, x: xp.cos(x), "cosine (sinusoidal and rotary positions)")
Abs = _unary("abs", lambda xp, x: xp.abs(x), "|x|", float_only=False)
Relu = _unary("relu", lambda xp, x: xp.maximum(x, 0), "max(x, 0)")
Sigmoid = _unary("sigmoid", lambda xp, x: 1 / (1 + xp.exp(-x)), "1 / (1 + e^−x)", flops_per=3)


def erf(xp, x):
    """erf from SciPy (NumPy) or cupyx (CuPy): NumPy itself has none."""
    if xp.__name__ == "numpy":
        from scipy.special import erf as f
    else:
        from cupyx.scipy.special import erf as f
    return f(x)


GELU_TANH_C = math.sqrt(2 / math.pi)


@register_op
class Gelu(OpDef):
    """GELU: exact x·Φ(x) (approximate="none") or the tanh form (approximate="tanh")."""

    name = "gelu"
    signature = 'gelu(x, approximate="none"|"tanh") -> like x'

    def infer(self, types, approximate="none"):
        if approximate not in ("none", "tanh"):
            raise ShapeError(f'gelu approximate must be "none" or "tanh", got {approximate!r}')
        return need_float(types[0], self.name)

    def kernel(self, xp, x, approximate="none"):
        if approximate == "tanh":
            return 0.5 * x * (1 + xp.tanh(GELU_TANH_C * (x + 0.044715 * x ** 3)))
        return 0.5 * x * (1 + erf(xp, x * (1 / math.sqrt(2))))

    def flops(self, i, o, **attrs):
        return 8 * math.prod(o[0])

    def label(self, approximate="none"):
        return "GELU (tanh)" if approximate == "tanh" else "GELU"


@register_op
class Where(OpDef):
    """cond ? a : b with broadcasting; cond is bool."""

    name = "where"
    signature = "where(cond: bool, a, b) -> broadcast(cond, a, b)"

    def infer(self, types, **attrs):
        c, a, b = types
        if c.dtype != "bool":
            raise ShapeError(f"where needs a bool condition, got {c.dtype}")
        ab = broadcast_types([a, b], self.name)
        return broadcast_types([c.with_dtype(ab.dtype), ab], self.name)

    def kernel(self, xp, c, a, b):
        return xp.where(c, a, b)


@register_op
class Cast(OpDef):
    """Convert to another dtype."""

    name = "cast"
    signature = "cast(x, dtype) -> x as dtype"

    def infer(self, types, dtype):
        return types[0].with_dtype(dtype)

    def kernel(self, xp, x, dtype):
        return x.astype(dtype)

    def flops(self, i, o, **attrs):
        return 0

    def label(self, dtype):
        return f"cast → {dtype}"
