"""Text inside the boxes: op labels with their folded scalar constants, block summaries.

Everything here returns plain text lines; dot.py escapes them (names are user data).
"""

from __future__ import annotations

import math

import numpy as np

from tgraph.ir import CONST, PARAM, Node
from tgraph.ops.registry import get_op
from tgraph.summary import human


def is_scalar_const(v) -> bool:
    return v.kind == CONST and v.data is not None and v.data.size == 1


def fmt_scalar(x: float) -> str:
    """0.125 -> '1/√64', 2.0 -> '2', -inf -> '−∞'."""
    x = float(x)
    if math.isnan(x):  # a constant from a file may be NaN
        return "NaN"
    if math.isinf(x):
        return "−∞" if x < 0 else "∞"
    if x == int(x) and abs(x) < 1e6:
        return str(int(x))
    if 0 < x < 1:
        k = round(1 / (x * x))
        if 1 < k <= 1 << 16 and math.isclose(x, k ** -0.5, rel_tol=1e-6):  # 1/√d_k
            return f"1/√{k}"
    return f"{x:.4g}"


def weight_symbol(name: str) -> str:
    """'decoder/layer_0/self_attn/head_0/w_q' -> 'W_q'; other names: their last part."""
    short = name.rpartition("/")[2]
    return "W" + short[1:] if short.startswith("w_") else short


def role_label(n: Node) -> str | None:
    """A projection or bias add named by its parameter: 'x·W_q', 'W·x', '+ b_q'."""
    if len(n.inputs) != 2 or n.op not in ("matmul", "add"):
        return None
    params = [i for i, v in enumerate(n.inputs) if v.kind == PARAM]
    if len(params) != 1:
        return None
    (i,) = params
    symbol = weight_symbol(n.inputs[i].name)
    if n.op == "add":
        return f"+ {symbol}"
    return f"x·{symbol}" if i == 1 else f"{symbol}·x"


def op_label(n: Node) -> str:
    """The op's own label (key attrs) with scalar constants written in: '× 1/√64'; a
    projection or bias add by the parameter it applies."""
    role = role_label(n)
    if role:
        return role
    text = get_op(n.op).label(**n.attrs)
    consts = [(i, fmt_scalar(np.asarray(v.data).reshape(()))) for i, v in enumerate(n.inputs)
              if is_scalar_const(v)]
    if not consts:
        return text
    if len(n.inputs) == 2 and len(consts) == 1:  # binary op: keep the operand order
        i, c = consts[0]
        return f"{text} {c}" if i == 1 else f"{c} {text} ·"
    return f"{text} ({', '.join(c for _, c in consts)})"


def block_lines(title: str, ins: list[str], outs: list[str], params: int, flops: int,
                copies: list[tuple[int, int]] = ()) -> list[str]:
    """What a collapsed block shows: its name, shapes in and out, parameters and FLOPs
    (``copies``: each folded copy's (params, FLOPs), when the block stands for a run)."""
    lines = [title]
    if ins:
        lines.append("in: " + ", ".join(ins))
    if outs:
        lines.append("out: " + ", ".join(outs))
    if copies and len({c for c in copies}) == 1:
        n = len(copies)
        lines.append(f"params ×{n} · {human(params)} each = {human(n * params)}")
        lines.append(f"FLOPs ×{n} · {human(flops)} each = {human(n * flops)}")
    elif copies:  # folded copies whose counts differ (shared weights owned by one)
        lines.append(f"params {' + '.join(human(p) for p, _ in copies)}")
        lines.append(f"FLOPs {' + '.join(human(f) for _, f in copies)}")
    else:
        lines.append(f"params {human(params)} · FLOPs {human(flops)}")
    return lines
