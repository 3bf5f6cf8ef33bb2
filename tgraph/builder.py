"""Builder API: functions that take Values and return Values, adding nodes to their graph.

    g = Graph("attn")
    x = g.input("x", ("B", "T", 64), "float32")
    with g.scope("layer_0"):
        w = g.param("w_q", (64, 64))
        q = tb.matmul(x, w)

Every function is a thin call of ``Graph.apply``: the op's shape rule runs at once, so a
wrong shape fails here, naming the op, its scope and the shapes. ``apply`` itself builds
any registered op, a plugin's too.
"""

from __future__ import annotations

from tgraph.ir import Value


def apply(op: str, *inputs, **attrs):
    """Add one node of any registered op; Python numbers become scalar constants."""
    graph = next(a.graph for a in inputs if isinstance(a, Value))
    vals = [graph.lift(a, like=inputs) for a in inputs]
    return graph.apply(op, vals, attrs)


def _op(name):
    def f(*inputs, **attrs):
        return apply(name, *inputs, **attrs)

    f.__name__ = name
    f.__doc__ = f"Add a {name!r} node (see `tgraph ops`)."
    return f


add, sub, mul, div, pow, maximum = map(_op, ("add", "sub", "mul", "div", "pow", "maximum"))
neg, exp, log, sqrt, rsqrt, tanh = map(_op, ("neg", "exp", "log", "sqrt", "rsqrt", "tanh"))
sin, cos, abs, relu, sigmoid = map(_op, ("sin", "cos", "abs", "relu", "sigmoid"))
matmul, where, concat = map(_op, ("matmul", "where", "concat"))


def gelu(x, approximate="none"):
    return apply("gelu", x, approximate=approximate)


def compare(a, b, cmp):
    """a <cmp> b as bool, cmp one of > >= < <= == != (for piecewise VJPs, with where)."""
    return apply("compare", a, b, cmp=cmp)


def cast(x, dtype):
    return apply("cast", x, dtype=dtype)


def sum(x, axes=None, keepdims=False):
    return apply("sum", x, axes=_axes(axes), keepdims=keepdims)


def mean(x, axes=None, keepdims=False):
    return apply("mean", x, axes=_axes(axes), keepdims=keepdims)


def max(x, axes=None, keepdims=False):
    return apply("max", x, axes=_axes(axes), keepdims=keepdims)


def _axes(axes):
    return [axes] if isinstance(axes, int) else None if axes is None else list(axes)


def softmax(x, axis=-1):
    return apply("softmax", x, axis=axis)


def layernorm(x, gamma, beta, eps=1e-5, decompose=False):
    """LayerNorm as one primitive, or spelled out as mean/sub/mul/rsqrt for teaching."""
    if not decompose:
        return apply("layernorm", x, gamma, beta, eps=eps)
    mu = mean(x, -1, keepdims=True)
    xc = x - mu
    var = mean(xc * xc, -1, keepdims=True)
    return xc * rsqrt(var + eps) * gamma + beta


def reshape(x, shape):
    return apply("reshape", x, shape=list(shape))


def transpose(x, perm):
    return apply("transpose", x, perm=list(perm))


def split(x, sizes, axis=-1):
    out = apply("split", x, axis=axis, sizes=list(sizes))
    return out if isinstance(out, tuple) else (out,)


def slice(x, axis, start, stop=None):
    return apply("slice", x, axis=axis, start=start, stop=stop)


def broadcast_to(x, shape):
    return apply("broadcast_to", x, shape=list(shape))


def gather(table, idx):
    return apply("gather", table, idx)


def one_hot(idx, depth, dtype="float32"):
    return apply("one_hot", idx, depth=depth, dtype=dtype)


def positions(x, axis, dtype="float32"):
    return apply("positions", x, axis=axis, dtype=dtype)


def mask(scores, keep=None, causal=False, window=0, fill="-inf"):
    inputs = (scores,) if keep is None else (scores, keep)
    return apply("mask", *inputs, causal=causal, window=window, fill=fill)


def cross_entropy(logits, targets):
    return apply("cross_entropy", logits, targets)


def linear(x, w, b=None):
    """x @ w (+ b): the projection every attention and feed-forward block uses."""
    y = matmul(x, w)
    return y if b is None else y + b


def scale(x, factor: float, name: str | None = None):
    """x · factor with the factor kept as a named scalar constant (e.g. 1/√d_k)."""
    return mul(x, x.graph.const(factor, name=name or "scale", dtype=x.dtype))
