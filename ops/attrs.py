"""Attribute schemas: each op declares its attrs' kinds (``OpDef.attr_kinds``), and every
node's attrs are checked against them when it is built or loaded, before any shape rule
or kernel sees them. So ``axis=true``, ``eps="1e-5"`` or ``window="-inf"`` from a graph
file is one clear error, not a crash three commands later.

A kind is one of the names below, ``"<kind>?"`` for "or null", or a tuple of the allowed
literal values. Ops that declare nothing (plugins) get their attr names checked against
their shape rule's signature and nothing more.
"""

from __future__ import annotations

import functools
import inspect
import math

from tgraph.shapes import _DTYPES, norm_dim

INT_LIMIT = 1 << 62  # no attr int needs more; bigger ones overflow int64 in kernels


def _int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and -INT_LIMIT <= x <= INT_LIMIT


def _dim(x) -> bool:
    if _int(x):
        return x >= -1  # reshape's -1: "whatever is left"
    if not isinstance(x, str) or len(x) > 200:
        return False
    try:
        norm_dim(x)
    except ValueError:
        return False
    return True


def _float_text(x) -> bool:
    if isinstance(x, bool) or not isinstance(x, (int, float, str)):
        return False
    try:
        return not math.isnan(float(x))
    except (ValueError, OverflowError):
        return False


def _positive_float(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


KINDS = {  # kind -> (test, what the message says it must be)
    "int": (_int, "an integer"),
    "nat": (lambda x: _int(x) and x >= 0, "an integer ≥ 0"),
    "pos": (lambda x: _int(x) and x >= 1, "an integer ≥ 1"),
    "bool": (lambda x: isinstance(x, bool), "true or false"),
    "ints": (lambda x: isinstance(x, list) and all(map(_int, x)), "a list of integers"),
    "sizes": (lambda x: isinstance(x, list) and x and all(_int(s) and s >= 1 for s in x),
              "a non-empty list of integers ≥ 1"),
    "axes": (lambda x: _int(x) or isinstance(x, list) and all(map(_int, x)),
             "an integer or a list of integers"),
    "shape": (lambda x: isinstance(x, list) and all(map(_dim, x)),
              "a list of dims (integers ≥ -1 or symbols such as \"B\" or \"B*T\")"),
    "dtype": (lambda x: x in _DTYPES, "one of " + "|".join(_DTYPES)),
    "eps": (_positive_float, "a finite number > 0"),
    "fill": (_float_text, "a number or its text (\"-inf\", \"0\"), not NaN"),
}


@functools.lru_cache(maxsize=None)
def _signature(op_class) -> tuple:
    """(input count range, attr names or None if open-ended, required attrs) read once per
    op class from its kernel's and shape rule's signatures."""
    infer = list(inspect.signature(op_class.infer).parameters.values())[2:]  # self, types
    kernel = list(inspect.signature(op_class.kernel).parameters.values())[2:]  # self, xp
    named = {p.name: p for p in infer if p.kind is not p.VAR_KEYWORD}
    open_ended = any(p.kind is p.VAR_KEYWORD for p in infer)
    required = tuple(k for k, p in named.items() if p.default is p.empty)
    attr_names = set(op_class.attr_kinds or ()) | set(named)
    if any(p.kind is p.VAR_POSITIONAL for p in kernel):
        arity = (1, None)
    else:
        arrays = [p for p in kernel if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                  and p.name not in attr_names]
        arity = (sum(p.default is p.empty for p in arrays), len(arrays))
    allowed = set(op_class.attr_kinds) if op_class.attr_kinds is not None else \
        None if open_ended else set(named)
    return arity, allowed, required


def arity_problem(opdef, n_inputs: int) -> str | None:
    """How many inputs the op's kernel takes (its array parameters, after ``xp`` and
    before the attrs) against ``n_inputs``; None when they fit."""
    (low, high), _, _ = _signature(type(opdef))
    if high is None:
        return None if n_inputs >= low else "takes at least 1 input, got 0"
    if not low <= n_inputs <= high:
        want = f"{low}" if low == high else f"{low} to {high}"
        return f"takes {want} input{'s' * (high != 1)}, got {n_inputs}"
    return None


def attr_problem(opdef, attrs: dict) -> str | None:
    """What is wrong with ``attrs`` for ``opdef``, in words; None when they fit."""
    if not isinstance(attrs, dict):
        return f"attrs must be an object, got {type(attrs).__name__}"
    _, allowed, required = _signature(type(opdef))
    kinds = opdef.attr_kinds
    if allowed is not None:
        unknown = sorted(set(attrs) - allowed)
        if unknown:
            return (f"unknown attr {unknown[0]!r} (the op takes "
                    f"{', '.join(sorted(allowed)) or 'no attrs'})")
    missing = [k for k in required if k not in attrs]
    if missing:
        return f"missing attr {missing[0]!r}"
    for key, kind in (kinds or {}).items():
        if key not in attrs:
            continue
        value = attrs[key]
        if isinstance(kind, tuple):
            if value not in kind or isinstance(value, bool):
                return f"attr {key} must be one of {', '.join(map(repr, kind))}, got {_show(value)}"
            continue
        optional = kind.endswith("?")
        test, what = KINDS[kind.rstrip("?")]
        if value is None and optional:
            continue
        if not test(value):
            return f"attr {key} must be {what}{' or null' if optional else ''}, got {_show(value)}"
    return None


def _show(value) -> str:
    from tgraph.sanitize import clip

    return clip(value) if isinstance(value, str) else clip(repr(value))[1:-1]
