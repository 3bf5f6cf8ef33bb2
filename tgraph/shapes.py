"""Shapes whose dims are ints or symbols.

A symbolic dim is a string: a name such as ``"B"`` or a product such as ``"B*T"`` or
``"2*T"`` (a monomial). That is all the arithmetic attention needs: reshapes that split or
merge axes, and broadcasting. Symbols are bound to ints when a graph is run.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Union

Dim = Union[int, str]
Shape = tuple

_DTYPES = ("float32", "float64", "float16", "int32", "int64", "bool")
FLOAT_DTYPES = ("float16", "float32", "float64")
INT_DTYPES = ("int32", "int64")


def check_dtype(dtype: str) -> str:
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; known: {', '.join(_DTYPES)}")
    return dtype


def _monomial(d: Dim) -> tuple[int, Counter]:
    if isinstance(d, bool):
        raise ValueError(f"bad dim {d!r}")
    if isinstance(d, int):
        return d, Counter()
    coef, syms = 1, Counter()
    for part in str(d).split("*"):
        part = part.strip()
        if part.lstrip("-").isdigit():
            coef *= int(part)
        elif part.isidentifier():
            syms[part] += 1
        else:
            raise ValueError(f"bad symbolic dim {d!r}")
    return coef, syms


def _from_monomial(coef: int, syms: Counter) -> Dim:
    names = sorted(syms.elements())
    if not names:
        return coef
    return "*".join(([str(coef)] if coef != 1 else []) + names)


# Every TensorType normalises its dims and every shape rule multiplies them: on gpt2-small's
# forward+backward graph that was half of the -O2 pipeline's time. Few distinct dims occur,
# so the results are memoised (typed: True is a bad dim, 1 is not).
@functools.lru_cache(maxsize=1 << 16, typed=True)
def norm_dim(d: Dim) -> Dim:
    """Canonical form: ints stay ints, ``"T*B"`` becomes ``"B*T"``, ``"4"`` becomes 4."""
    return _from_monomial(*_monomial(d))


@functools.lru_cache(maxsize=1 << 16, typed=True)
def dim_mul(a: Dim, b: Dim) -> Dim:
    ca, sa = _monomial(a)
    cb, sb = _monomial(b)
    return _from_monomial(ca * cb, sa + sb)


def dim_div(a: Dim, b: Dim) -> Dim | None:
    """a / b when it is a whole monomial, else None."""
    ca, sa = _monomial(a)
    cb, sb = _monomial(b)
    if cb == 0 or ca % cb or any(sa[k] < v for k, v in sb.items()):
        return None
    return _from_monomial(ca // cb, sa - sb)


def shape_size(shape: Sequence[Dim]) -> Dim:
    out: Dim = 1
    for d in shape:
        out = dim_mul(out, d)
    return out


def symbols(shape: Sequence[Dim]) -> set[str]:
    return {s for d in shape for s in _monomial(d)[1]}


def eval_dim(d: Dim, env: Mapping[str, int]) -> int:
    coef, syms = _monomial(d)
    missing = [s for s in syms if s not in env]
    if missing:
        raise KeyError(missing[0])
    return coef * math.prod(env[s] ** n for s, n in syms.items())


def eval_shape(shape: Sequence[Dim], env: Mapping[str, int]) -> tuple[int, ...]:
    return tuple(eval_dim(d, env) for d in shape)


def broadcast(a: Sequence[Dim], b: Sequence[Dim]) -> tuple | None:
    """NumPy broadcasting of two symbolic shapes; None when they do not broadcast."""
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        da = a[-i] if i <= len(a) else 1
        db = b[-i] if i <= len(b) else 1
        if da == db or db == 1:
            out.append(da)
        elif da == 1:
            out.append(db)
        else:
            return None
    return tuple(reversed(out))


def fmt_dim(d: Dim) -> str:
    return str(d).replace("*", "·")


def fmt_shape(shape: Sequence[Dim]) -> str:
    """``B×T×512``, the form diagrams and messages use; ``scalar`` for rank 0."""
    return "×".join(fmt_dim(d) for d in shape) if len(shape) else "scalar"


def norm_axis(axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise ValueError(f"axis {axis} out of range for rank {rank}")
    return axis % rank if rank else 0
