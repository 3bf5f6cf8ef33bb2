"""Elementwise ops: binary arithmetic with broadcasting, unary maths, activations, where, cast.

Binary ops need both inputs of one dtype: no silent promotion, so a float64 gradient check
stays float64 all the way through. Python numbers are lifted to the partner's dtype.
"""

from __future__ import annotations

import math

from tgraph import builder as tb
from tgraph.errors import ShapeError
from tgraph.ops.registry import OpDef, register_op
from tgraph.ops.special import chunked, erf, ndtr
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


# ----- gradient helpers shared by every op family's VJP ------------------------------------
def unbroadcast(g, like):
    """Sum a cotangent over the axes that broadcasting added, back to ``like``'s shape."""
    if g is None or g.shape == like.shape:
        return g
    lead = len(g.shape) - len(like.shape)
    axes = [*range(lead), *(lead + i for i, d in enumerate(like.shape)
                            if d == 1 and g.shape[lead + i] != 1)]
    return tb.reshape(tb.sum(g, axes, keepdims=True), like.shape) if axes else g


def scalar(like, value):
    """A scalar constant of ``like``'s dtype (``where`` cannot take it from a bool partner)."""
    return like.graph.const(value, name="scalar", dtype=like.dtype)


def zeros(like):
    """Zeros of ``like``'s type, built from its (possibly symbolic) shape."""
    return tb.broadcast_to(scalar(like, 0), like.shape)


def select(cond, g):
    """(g where cond, 0 elsewhere), (0 where cond, g elsewhere): the two sides of a switch."""
    zero = scalar(g, 0)
    return tb.where(cond, g, zero), tb.where(cond, zero, g)


# ----- binary ops -------------------------------------------------------------------------
BINARY_SHAPES = [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((2, 1, 4), (3, 1)), ((3, 4), ())]


class Binary(OpDef):
    fresh_result = True
    symbol = "?"
    attr_kinds: dict = {}

    @property
    def signature(self):
        return f"{self.name}(a, b) -> broadcast(a, b)"

    def infer(self, types, **attrs):
        return broadcast_types(types, self.name)

    def label(self, **attrs):
        return self.symbol

    def vjp(self, node, grads):
        a, b = node.inputs
        ga, gb = self.rule(a, b, node.output, grads[0])
        return [unbroadcast(ga, a), unbroadcast(gb, b)]

    def examples(self, rng):
        return [([self.domain(rng.standard_normal(sa)), self.domain(rng.standard_normal(sb), 1)],
                 {}) for sa, sb in BINARY_SHAPES]

    @staticmethod
    def domain(x, arg=0):
        """Map a normal sample into the op's domain for argument ``arg`` (examples only)."""
        return x


def _binary(name, symbol, fn, rule, doc, formula, domain=None):
    """Register a broadcasting binary op: kernel fn(xp, a, b), VJP rule(a, b, y, g) giving
    the un-reduced cotangents of a and b (the class sums them back over broadcast axes),
    and its scalar ``formula`` with {0}, {1} for the arguments (for fused kernels)."""
    body = {"name": name, "symbol": symbol, "doc": doc, "rule": staticmethod(rule),
            "kernel": lambda self, xp, a, b: fn(xp, a, b),
            "scalar": lambda self, args: formula.format(*args)}
    if domain:
        body["domain"] = staticmethod(domain)
    return register_op(type(name.title(), (Binary,), body))


def _div_rule(a, b, y, g):
    ga = g / b
    return ga, -(ga * y)


def _maximum_rule(a, b, y, g):
    return select(tb.compare(a, b, ">="), g)


def _away_from_zero(x, arg=0):
    return x + (0.5 if arg else 0) * (2 * (x >= 0) - 1)


Add = _binary("add", "+", lambda xp, a, b: a + b, lambda a, b, y, g: (g, g),
              "a + b with broadcasting", "({0} + {1})")
Sub = _binary("sub", "−", lambda xp, a, b: a - b, lambda a, b, y, g: (g, -g),
              "a − b with broadcasting", "({0} - {1})")
Mul = _binary("mul", "×", lambda xp, a, b: a * b, lambda a, b, y, g: (g * b, g * a),
              "a × b with broadcasting", "({0} * {1})")
Div = _binary("div", "÷", lambda xp, a, b: a / b, _div_rule, "a ÷ b with broadcasting",
              "({0} / {1})", domain=_away_from_zero)
Pow = _binary("pow", "^", lambda xp, a, b: a ** b,
              lambda a, b, y, g: (g * b * tb.pow(a, b - 1), g * y * tb.log(a)),
              "a ** b with broadcasting", "({0} ** {1})", domain=lambda x, arg=0: x if arg else abs(x) + 0.5)
Maximum = _binary("maximum", "max", lambda xp, a, b: xp.maximum(a, b), _maximum_rule,
                  "elementwise max(a, b)", "({0} if {0} >= {1} or {0} != {0} else {1})")


COMPARISONS = {">": "greater", ">=": "greater_equal", "<": "less", "<=": "less_equal",
               "==": "equal", "!=": "not_equal"}


@register_op
class Compare(OpDef):
    """a <cmp> b elementwise as bool (cmp one of > >= < <= == !=); zero gradient."""

    fresh_result = True

    name = "compare"
    attr_kinds = {"cmp": tuple(COMPARISONS)}
    signature = 'compare(a, b, cmp=">") -> bool broadcast(a, b)'

    def infer(self, types, cmp):
        if cmp not in COMPARISONS:
            raise ShapeError(f"compare cmp must be one of {' '.join(COMPARISONS)}, got {cmp!r}")
        return broadcast_types(types, self.name).with_dtype("bool")

    def kernel(self, xp, a, b, cmp):
        return getattr(xp, COMPARISONS[cmp])(a, b)

    def scalar(self, args, cmp):
        return f"({args[0]} {cmp} {args[1]})" if cmp in COMPARISONS else None

    def vjp(self, node, grads):
        return [None, None]  # piecewise constant

    def examples(self, rng):
        return [([rng.standard_normal(sa), rng.standard_normal(sb)], {"cmp": c})
                for (sa, sb), c in zip(BINARY_SHAPES, (">", "<=", "==", "!="))]

    def label(self, cmp):
        return cmp


# ----- unary ops --------------------------------------------------------------------------
class Unary(OpDef):
    fresh_result = True
    float_only = True
    attr_kinds: dict = {}

    @property
    def signature(self):
        return f"{self.name}(x) -> like x"

    def infer(self, types, **attrs):
        (t,) = types
        return need_float(t, self.name) if self.float_only else t

    def vjp(self, node, grads):
        return [self.rule(node.inputs[0], node.output, grads[0])]

    def examples(self, rng):
        return [([self.domain(rng.standard_normal(s))], {}) for s in ((2, 3, 5), ())]

    @staticmethod
    def domain(x):
        return x


def _unary(name, fn, rule, doc, formula, float_only=True, flops_per=1, positive=False,
           label=None):
    """Register an elementwise op: kernel fn(xp, x), VJP rule(x, y, g) -> cotangent of x,
    scalar ``formula`` with {0} for x (fused kernels). ``positive`` ops (log, sqrt) are only
    defined for x > 0 (their examples stay there). ``label``: a diagram's text, if not the
    name."""
    body = {
        "name": name, "doc": doc, "float_only": float_only, "rule": staticmethod(rule),
        "kernel": lambda self, xp, x: fn(xp, x),
        "scalar": lambda self, args: formula.format(*args),
        "flops": lambda self, i, o, **a: flops_per * math.prod(o[0]),
        "label": lambda self, **a: label or name,
    }
    if positive:
        body["domain"] = staticmethod(lambda x: abs(x) + 0.2)
    return register_op(type(name.title(), (Unary,), body))


Neg = _unary("neg", lambda xp, x: -x, lambda x, y, g: -g, "−x", "(-{0})", float_only=False)
Exp = _unary("exp", lambda xp, x: xp.exp(x), lambda x, y, g: g * y, "e^x", "math.exp({0})")
Log = _unary("log", lambda xp, x: xp.log(x), lambda x, y, g: g / x, "natural logarithm",
             "math.log({0})", positive=True)
Sqrt = _unary("sqrt", lambda xp, x: xp.sqrt(x), lambda x, y, g: g / y * 0.5, "√x",
              "math.sqrt({0})", positive=True)
Rsqrt = _unary("rsqrt", lambda xp, x: 1 / xp.sqrt(x), lambda x, y, g: g * y / x * -0.5,
               "1/√x", "(1.0 / math.sqrt({0}))", flops_per=2, positive=True)
Tanh = _unary("tanh", lambda xp, x: xp.tanh(x), lambda x, y, g: g * (1 - y * y),
              "hyperbolic tangent", "math.tanh({0})")
Sin = _unary("sin", lambda xp, x: xp.sin(x), lambda x, y, g: g * tb.cos(x),
             "sine (sinusoidal and rotary positions)", "math.sin({0})")
Cos = _unary("cos", lambda xp, x: xp.cos(x), lambda x, y, g: -(g * tb.sin(x)),
             "cosine (sinusoidal and rotary positions)", "math.cos({0})")
Abs = _unary("abs", lambda xp, x: xp.abs(x),
             lambda x, y, g: tb.where(tb.compare(x, scalar(x, 0), ">="), g, -g), "|x|",
             "abs({0})", float_only=False)
Relu = _unary("relu", lambda xp, x: xp.maximum(x, 0),
              lambda x, y, g: tb.where(tb.compare(x, scalar(x, 0), ">"), g, scalar(g, 0)),
              "max(x, 0)", "({0} if {0} > 0 else 0.0 * {0})")
Sigmoid = _unary("sigmoid", lambda xp, x: 1 / (1 + xp.exp(-x)),
                 lambda x, y, g: g * y * (1 - y), "1 / (1 + e^−x)",
                 "(1.0 / (1.0 + math.exp(-{0})))", flops_per=3)
Erf = _unary("erf", lambda xp, x: erf(xp, x),
             lambda x, y, g: g * tb.exp(-(x * x)) * (2 / math.sqrt(math.pi)),
             "Gauss error function (exact GELU's gradient)", "math.erf({0})", flops_per=10)
Ndtr = _unary("ndtr", lambda xp, x: ndtr(xp, x),
              lambda x, y, g: g * tb.exp(x * x * -0.5) * (1 / math.sqrt(2 * math.pi)),
              "Φ(x), the standard normal CDF (a training graph's exact GELU is x·Φ(x), so "
              "its gradient reads Φ)", "math.ndtr({0})", flops_per=10, label="Φ")


GELU_TANH_C = math.sqrt(2 / math.pi)


@register_op
class Gelu(OpDef):
    """GELU: exact x·Φ(x) (approximate="none") or the tanh form (approximate="tanh")."""

    fresh_result = True

    name = "gelu"
    attr_kinds = {"approximate": ("none", "tanh")}
    signature = 'gelu(x, approximate="none"|"tanh") -> like x'

    def infer(self, types, approximate="none"):
        if approximate not in ("none", "tanh"):
            raise ShapeError(f'gelu approximate must be "none" or "tanh", got {approximate!r}')
        return need_float(types[0], self.name)

    def kernel(self, xp, x, approximate="none"):
        return chunked(lambda x: gelu_formula(xp, x, approximate), x, xp=xp)

    def flops(self, i, o, **attrs):
        return 8 * math.prod(o[0])

    def scalar(self, args, approximate="none"):
        x = args[0]
        if approximate == "tanh":
            return f"(0.5 * {x} * (1.0 + math.tanh({GELU_TANH_C!r} * ({x} + 0.044715 * {x} * {x} * {x}))))"
        return f"({x} * math.ndtr({x}))"

    def vjp(self, node, grads):
        return [tb.apply("gelu_grad", node.inputs[0], grads[0], **node.attrs)]

    def examples(self, rng):
        x = rng.standard_normal((3, 7)) * 2
        return [([x], {"approximate": "none"}), ([x], {"approximate": "tanh"})]

    def label(self, approximate="none"):
        return "GELU (tanh)" if approximate == "tanh" else "GELU"


def gelu_formula(xp, x, approximate):
    if approximate == "tanh":
        y = xp.tanh(gelu_tanh_inner(x))
        y += 1
        y *= 0.5
    else:
        y = ndtr(xp, x)
    y *= x
    return y


def gelu_tanh_inner(x):
    """√(2/π)·(x + 0.044715·x³), the tanh form's argument."""
    u = x * x
    u *= 0.044715
    u += 1
    u *= x
    u *= GELU_TANH_C
    return u


@register_op
class Where(OpDef):
    """cond ? a : b with broadcasting; cond is bool."""

    fresh_result = True

    name = "where"
    attr_kinds: dict = {}
    signature = "where(cond: bool, a, b) -> broadcast(cond, a, b)"

    def infer(self, types, **attrs):
        c, a, b = types
        if c.dtype != "bool":
            raise ShapeError(f"where needs a bool condition, got {c.dtype}")
        ab = broadcast_types([a, b], self.name)
        return broadcast_types([c.with_dtype(ab.dtype), ab], self.name)

    def kernel(self, xp, c, a, b):
        return xp.where(c, a, b)

    def scalar(self, args):
        return f"({args[1]} if {args[0]} else {args[2]})"

    def vjp(self, node, grads):
        c, a, b = node.inputs
        ga, gb = select(c, grads[0])
        return [None, unbroadcast(ga, a), unbroadcast(gb, b)]

    def examples(self, rng):
        return [([rng.random(sc) > 0.5, rng.standard_normal(sa), rng.standard_normal(sb)], {})
                for sc, sa, sb in (((3, 4), (3, 4), (3, 4)), ((4,), (2, 3, 4), ()),
                                   ((2, 1, 4), (3, 1), (4,)))]


@register_op
class Cast(OpDef):
    """Convert to another dtype."""

    name = "cast"
    attr_kinds = {"dtype": "dtype"}
    signature = "cast(x, dtype) -> x as dtype"

    def infer(self, types, dtype):
        return types[0].with_dtype(dtype)

    def kernel(self, xp, x, dtype):
        return x.astype(dtype)

    def vjp(self, node, grads):
        (x,) = node.inputs
        return [tb.cast(grads[0], x.dtype) if x.dtype in FLOAT_DTYPES else None]

    def examples(self, rng):
        x = rng.standard_normal((3, 4))
        return [([x], {"dtype": "float64"}), ([x], {"dtype": "int64"}),
                ([rng.integers(-3, 3, (5,))], {"dtype": "float64"})]

    def flops(self, i, o, **attrs):
        return 0

    def label(self, dtype):
        return f"cast → {dtype}"
