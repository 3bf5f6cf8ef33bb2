"""How each built-in op is written in standard ONNX ops (opset 17..21).

A rule is ``rule(e, node, ins) -> output name(s)``: ``e`` is the ``Emitter``, ``ins`` the
ONNX names of the node's inputs. A plugin op joins by defining ``to_onnx`` with the same
signature on its ``OpDef``; the table is kept here rather than on the built-in classes so
that the op registry never imports ``onnx``.
"""

from __future__ import annotations

import math

from tgraph.interop.onnx_export import INT64_MAX, ExportError, onnx_dtype
from tgraph.shapes import norm_axis


def rule_for(node):
    from tgraph.ops.registry import get_op

    opdef = get_op(node.op)
    custom = getattr(opdef, "to_onnx", None)
    if custom is not None:
        return custom
    if node.op in RULES:
        return RULES[node.op]
    raise ExportError(f"{node.where()}: op {node.op!r} has no ONNX rule; give its OpDef a "
                      "to_onnx(e, node, ins) method (see tgraph/interop/onnx_rules.py)")


def _same(op_type):
    return lambda e, n, ins: e.op(op_type, ins)


def _dtype(n, i=0):
    return n.inputs[i].dtype


def _rsqrt(e, n, ins):
    return e.op("Reciprocal", [e.op("Sqrt", ins)])


def _compare(e, n, ins):
    cmp = n.attrs["cmp"]
    if cmp == "!=":
        return e.op("Not", [e.op("Equal", ins)])
    return e.op({">": "Greater", ">=": "GreaterOrEqual", "<": "Less", "<=": "LessOrEqual",
                 "==": "Equal"}[cmp], ins)


def _cast(e, n, ins):
    return e.op("Cast", ins, to=onnx_dtype(n.attrs["dtype"]))


def _phi_cdf(e, x, dt):
    """Φ(x) = ½·(1 + erf(x/√2))."""
    s = e.op("Erf", [e.op("Mul", [x, e.scalar(1 / math.sqrt(2), dt)])])
    return e.op("Mul", [e.op("Add", [s, e.scalar(1, dt)]), e.scalar(0.5, dt)])


def _ndtr(e, n, ins):
    return _phi_cdf(e, ins[0], _dtype(n))


def _tanh_inner(e, x, dt):
    """t = tanh(√(2/π)·(x + 0.044715·x³))."""
    x3 = e.op("Mul", [e.op("Mul", [x, x]), x])
    u = e.op("Add", [x, e.op("Mul", [x3, e.scalar(0.044715, dt)])])
    return e.op("Tanh", [e.op("Mul", [u, e.scalar(math.sqrt(2 / math.pi), dt)])])


def _gelu(e, n, ins):
    approximate = n.attrs.get("approximate", "none")
    if e.opset >= 20:
        return e.op("Gelu", ins, approximate=approximate)
    (x,), dt = ins, _dtype(n)
    if approximate == "tanh":
        half = e.op("Mul", [e.op("Add", [_tanh_inner(e, x, dt), e.scalar(1, dt)]),
                            e.scalar(0.5, dt)])
        return e.op("Mul", [x, half])
    return e.op("Mul", [x, _phi_cdf(e, x, dt)])


def _gelu_grad(e, n, ins):
    (x, g), dt = ins, _dtype(n)
    if n.attrs.get("approximate", "none") == "tanh":
        # ½(1 + t) + ½·x·(1 − t²)·√(2/π)·(1 + 3a·x²)
        t = _tanh_inner(e, x, dt)
        a = e.op("Mul", [e.op("Add", [t, e.scalar(1, dt)]), e.scalar(0.5, dt)])
        sech2 = e.op("Sub", [e.scalar(1, dt), e.op("Mul", [t, t])])
        du = e.op("Add", [e.scalar(1, dt), e.op("Mul", [e.op("Mul", [x, x]),
                                                        e.scalar(3 * 0.044715, dt)])])
        du = e.op("Mul", [du, e.scalar(0.5 * math.sqrt(2 / math.pi), dt)])
        d = e.op("Add", [a, e.op("Mul", [e.op("Mul", [x, sech2]), du])])
    else:  # Φ(x) + x·φ(x)
        pdf = e.op("Exp", [e.op("Mul", [e.op("Mul", [x, x]), e.scalar(-0.5, dt)])])
        pdf = e.op("Mul", [pdf, e.scalar(1 / math.sqrt(2 * math.pi), dt)])
        d = e.op("Add", [_phi_cdf(e, x, dt), e.op("Mul", [x, pdf])])
    return e.op("Mul", [d, g])


def reduce(e, op_type, x, axes, keepdims):
    """ReduceSum/Mean/Max/Prod with axes as an input (ReduceSum from 13, the others from 18)
    or an attribute (before 18); axes None reduces everything."""
    keep = int(bool(keepdims))
    if axes is None:
        return e.op(op_type, [x], keepdims=keep)
    axes = [axes] if isinstance(axes, int) else list(axes)
    if op_type == "ReduceSum" or e.opset >= 18:
        return e.op(op_type, [x, e.ints(axes)], keepdims=keep)
    return e.op(op_type, [x], axes=axes, keepdims=keep)


def _reduction(op_type):
    return lambda e, n, ins: reduce(e, op_type, ins[0], n.attrs.get("axes"),
                                    n.attrs.get("keepdims", False))


def _softmax(e, n, ins):
    y = e.op("Softmax", ins, axis=n.attrs.get("axis", -1))
    src = n.inputs[0].node
    if src is not None and src.op == "mask" and src.attrs.get("fill", "-inf") == "-inf":
        # a fully masked row is all −inf: tgraph gives zeros there, ONNX's Softmax NaN
        y = e.op("Where", [e.op("IsNaN", [y]), e.scalar(0, _dtype(n)), y])
    return y


def _masked_softmax(e, n, ins):
    """Mul by the scale, Where(pattern, scores, −inf), then Softmax with its NaN rows (no
    key kept) as 0."""
    scale = float(n.attrs.get("scale", 1.0))
    scores = ins if scale == 1.0 else [e.op("Mul", [ins[0], e.scalar(scale, _dtype(n))])]
    y = e.op("Softmax", [_mask(e, n, scores)], axis=-1)
    return e.op("Where", [e.op("IsNaN", [y]), e.scalar(0, _dtype(n)), y])


def _attention(e, n, ins):
    """MatMul(q, kᵀ), the masked softmax above, MatMul with v (and the weights, when kept)."""
    q, k, v = ins
    rank = n.inputs[0].type.rank
    k_t = e.op("Transpose", [k], perm=[*range(rank - 2), rank - 1, rank - 2])
    weights = _masked_softmax(e, n, [e.op("MatMul", [q, k_t])])
    out = e.op("MatMul", [weights, v])
    return [out, weights] if n.attrs.get("weights") else out


def _attention_grad(e, n, ins):
    """ops/masking.py's closed form: the weights kept or computed again, then (dS·k, dSᵀ·q,
    Pᵀ·g)."""
    q, k, v, g = ins[:4]
    rank = n.inputs[0].type.rank
    perm = [*range(rank - 2), rank - 1, rank - 2]

    def t(x):
        return e.op("Transpose", [x], perm=perm)

    weights = ins[4] if len(ins) == 5 else _masked_softmax(e, n, [e.op("MatMul", [q, t(k)])])
    d_weights = e.op("MatMul", [g, t(v)])
    d_scores = e.op("Mul", [_softmax_grad(e, n, [weights, d_weights]),
                            e.scalar(float(n.attrs.get("scale", 1.0)), _dtype(n))])
    return [e.op("MatMul", [d_scores, k]), e.op("MatMul", [t(d_scores), q]),
            e.op("MatMul", [t(weights), g])]


def _softmax_grad(e, n, ins):
    y, g = ins
    yg = e.op("Mul", [y, g])
    s = reduce(e, "ReduceSum", yg, [n.attrs.get("axis", -1)], True)
    return e.op("Sub", [yg, e.op("Mul", [y, s])])


def _layernorm(e, n, ins):
    return e.op("LayerNormalization", ins, axis=-1, epsilon=float(n.attrs.get("eps", 1e-5)))


def _layernorm_grad(e, n, ins):
    """ops/fused_grads.py's closed form: (dx (+ the residual), dγ, dβ)."""
    x, gamma, g = ins[:3]
    dt = _dtype(n)

    def mean(v):
        return reduce(e, "ReduceMean", v, [-1], True)

    xc = e.op("Sub", [x, mean(x)])
    var = e.op("Add", [mean(e.op("Mul", [xc, xc])), e.scalar(float(n.attrs.get("eps", 1e-5)), dt)])
    rstd = e.op("Reciprocal", [e.op("Sqrt", [var])])
    xhat = e.op("Mul", [xc, rstd])
    gh = e.op("Mul", [g, gamma])
    centred = e.op("Sub", [gh, mean(gh)])
    dx = e.op("Mul", [e.op("Sub", [centred, e.op("Mul", [xhat, mean(e.op("Mul", [gh, xhat]))])]),
                      rstd])
    lead = list(range(n.inputs[0].type.rank - 1))

    def over_lead(v):
        return reduce(e, "ReduceSum", v, lead, False) if lead else v

    if len(ins) == 4:
        dx = e.op("Add", [ins[3], dx])
    sums = [over_lead(dx)] if n.attrs.get("sum_dx") else []
    return [dx, over_lead(e.op("Mul", [g, xhat])), over_lead(g), *sums]


def _cross_entropy(e, n, ins):
    logits, targets = ins
    classes = n.inputs[0].shape[-1]
    flat = e.op("Reshape", [logits, e.shape([-1, classes])])
    labels = e.op("Reshape", [e.op("Cast", [targets], to=onnx_dtype("int64")), e.ints([-1])])
    return e.op("SoftmaxCrossEntropyLoss", [flat, labels], reduction="mean")


def _cross_entropy_grad(e, n, ins):
    """ops/fused_grads.py's closed form: (Softmax(logits) − one-hot(targets))·g/N."""
    logits, targets, g = ins
    hits = one_hot(e, targets, n.inputs[0].shape[-1], _dtype(n))
    count = e.op("Cast", [e.op("Size", [targets])], to=onnx_dtype(_dtype(n)))
    diff = e.op("Sub", [e.op("Softmax", [logits], axis=-1), hits])
    return e.op("Mul", [diff, e.op("Div", [g, count])])


def _axis_dim(e, x, axis: int):
    """x's size along ``axis`` (-2 or -1 here) as an int64 scalar, read at run time."""
    end = {"end": axis + 1} if axis != -1 else {}
    return e.op("Squeeze", [e.op("Shape", [x], start=axis, **end)])


def _arange(e, n_scalar):
    return e.op("Range", [e.const(_i64(0)), n_scalar, e.const(_i64(1))])


def _i64(v):
    import numpy as np

    return np.asarray(v, dtype=np.int64)


def _mask(e, n, ins):
    x, *keep = ins
    causal, window = n.attrs.get("causal", False), n.attrs.get("window", 0)
    dt = _dtype(n)
    if causal or window:
        t, s = _axis_dim(e, x, -2), _axis_dim(e, x, -1)
        # query i is aligned to the last keys: row index + (S − T)
        rows = e.op("Add", [_arange(e, t), e.op("Sub", [s, t])])
        rows = e.op("Unsqueeze", [rows, e.ints([1])])
        cols = _arange(e, s)
        pattern = []
        if causal:
            pattern.append(e.op("LessOrEqual", [cols, rows]))
        if window:
            dist = e.op("Abs", [e.op("Sub", [cols, rows])])
            pattern.append(e.op("LessOrEqual", [dist, e.const(_i64(int(window)))]))
        keep = keep + pattern
    ok = keep[0]
    for k in keep[1:]:
        ok = e.op("And", [ok, k])
    return e.op("Where", [ok, x, e.scalar(float(n.attrs.get("fill", "-inf")), dt)])


def _numel(e, n, ins):
    axes = n.attrs.get("axes")
    if axes is None:
        count = e.op("Size", ins)
    else:
        rank = n.inputs[0].type.rank
        axes = [axes] if isinstance(axes, int) else axes
        picked = e.op("Gather", [e.op("Shape", ins), e.ints([norm_axis(a, rank) for a in axes])])
        count = reduce(e, "ReduceProd", picked, None, False)
    return e.op("Cast", [count], to=onnx_dtype(n.attrs.get("dtype", "float32")))


def _positions(e, n, ins):
    rank = n.inputs[0].type.rank
    ax = norm_axis(n.attrs["axis"], rank)
    dim = e.op("Squeeze", [e.op("Shape", ins, start=ax, end=ax + 1)])
    return e.op("Cast", [_arange(e, dim)], to=onnx_dtype(n.attrs.get("dtype", "float32")))


def _reshape(e, n, ins):
    return e.op("Reshape", [ins[0], e.shape(n.attrs["shape"])])


def _broadcast_to(e, n, ins):
    return e.op("Expand", [ins[0], e.shape(n.attrs["shape"])])


def _transpose(e, n, ins):
    return e.op("Transpose", ins, perm=list(n.attrs["perm"]))


def _concat(e, n, ins):
    return e.op("Concat", ins, axis=n.attrs["axis"])


def _split(e, n, ins):
    sizes = list(n.attrs["sizes"])
    outs = e.op("Split", [ins[0], e.ints(sizes)], n_out=len(sizes), axis=n.attrs["axis"])
    return [outs] if len(sizes) == 1 else outs


def _slice(e, n, ins):
    a = n.attrs
    stop = INT64_MAX if a.get("stop") is None else a["stop"]
    return e.op("Slice", [ins[0], e.ints([a["start"]]), e.ints([stop]), e.ints([a["axis"]])])


def _unslice(e, n, ins):
    """Zeros around x: Pad with [start, dim − stop] on the axis."""
    a, shape = n.attrs, list(n.attrs["shape"])
    rank = len(shape)
    ax = norm_axis(a["axis"], rank)
    d, stop = shape[ax], a.get("stop")
    if isinstance(d, int):
        start, stop = range(d)[a["start"]:stop].start, range(d)[a["start"]:stop].stop
        after = e.ints([d - stop])
    else:  # symbolic dims only take non-negative bounds (slice's shape rule)
        start = a["start"]
        after = e.ints([0]) if stop is None else e.op("Sub", [e.dim(d), e.ints([stop])])
    tail = [0] * (rank - 1 - ax)
    pieces = [e.ints([0] * ax + [start] + tail + [0] * ax), after] + ([e.ints(tail)] if tail else [])
    pads = e.op("Concat", pieces, axis=0)
    return e.op("Pad", [ins[0], pads], mode="constant")


def _gather(e, n, ins):
    return e.op("Gather", ins, axis=0)


def _scatter_add(e, n, ins):
    import numpy as np
    from onnx import numpy_helper

    upd, idx, *given = ins
    zero = numpy_helper.from_array(np.zeros(1, dtype=_dtype(n)))
    base = given[0] if given else e.op("ConstantOfShape", [e.shape(n.attrs["shape"])],
                                       value=zero)
    idx = e.op("Unsqueeze", [e.op("Cast", [idx], to=onnx_dtype("int64")), e.ints([-1])])
    return e.op("ScatterND", [base, idx, upd], reduction="add")


def _one_hot(e, n, ins):
    return one_hot(e, ins[0], n.attrs["depth"], n.attrs.get("dtype", "float32"))


def one_hot(e, idx, depth: int, dtype: str):
    idx = e.op("Unsqueeze", [e.op("Cast", [idx], to=onnx_dtype("int64")), e.ints([-1])])
    hit = e.op("Equal", [idx, e.ints(list(range(depth)))])
    return e.op("Cast", [hit], to=onnx_dtype(dtype))


def _fused(e, n, ins):
    """A fused node is written out as its body, op by op, each by its own rule."""
    from types import SimpleNamespace

    from tgraph.ops.fused import body_types
    from tgraph.types import TensorType

    types = body_types([v.type for v in n.inputs], n.attrs["body"])
    values = [SimpleNamespace(type=t, dtype=t.dtype, shape=t.shape) for t in types]
    names = list(ins)
    for k, entry in enumerate(n.attrs["body"]):
        args, arg_values = [], []
        for a in entry["args"]:
            if isinstance(a, dict):
                args.append(e.scalar(a["value"], a["dtype"]))
                t = TensorType(a["dtype"], ())
                arg_values.append(SimpleNamespace(type=t, dtype=t.dtype, shape=()))
            else:
                args.append(names[a])
                arg_values.append(values[a])
        out = values[len(n.inputs) + k]
        member = SimpleNamespace(op=entry["op"], attrs=entry.get("attrs", {}),
                                 inputs=arg_values, outputs=[out], output=out, name=n.name,
                                 scope=n.scope, where=n.where)
        names.append(rule_for(member)(e, member, args))
    res = [names[a] for a in n.attrs["outputs"]]
    return res[0] if len(res) == 1 else res


RULES = {
    "fused": _fused,
    "add": _same("Add"), "sub": _same("Sub"), "mul": _same("Mul"), "div": _same("Div"),
    "pow": _same("Pow"), "maximum": _same("Max"), "neg": _same("Neg"), "exp": _same("Exp"),
    "log": _same("Log"), "sqrt": _same("Sqrt"), "rsqrt": _rsqrt, "tanh": _same("Tanh"),
    "sin": _same("Sin"), "cos": _same("Cos"), "abs": _same("Abs"), "relu": _same("Relu"),
    "sigmoid": _same("Sigmoid"), "erf": _same("Erf"), "ndtr": _ndtr, "gelu": _gelu,
    "gelu_grad": _gelu_grad,
    "where": _same("Where"), "compare": _compare, "cast": _cast, "matmul": _same("MatMul"),
    "sum": _reduction("ReduceSum"), "mean": _reduction("ReduceMean"),
    "max": _reduction("ReduceMax"), "numel": _numel, "softmax": _softmax,
    "softmax_grad": _softmax_grad, "masked_softmax": _masked_softmax,
    "attention": _attention, "attention_grad": _attention_grad,
    "layernorm": _layernorm, "layernorm_grad": _layernorm_grad,
    "cross_entropy": _cross_entropy, "cross_entropy_grad": _cross_entropy_grad,
    "mask": _mask, "reshape": _reshape, "transpose": _transpose, "concat": _concat,
    "split": _split, "slice": _slice, "unslice": _unslice, "broadcast_to": _broadcast_to,
    "gather": _gather, "scatter_add": _scatter_add, "one_hot": _one_hot,
    "positions": _positions,
}
