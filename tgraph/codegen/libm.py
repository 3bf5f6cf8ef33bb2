"""The math of float64 kernels: Python's ``math`` (libm, which Numba calls directly), and
Φ(x) for the formulas that name it (GELU), as ½·erfc(−x/√2): no cancellation in the tail."""

from __future__ import annotations

from math import *  # noqa: F403 (the formulas' math.exp, math.tanh, ...)
from math import erfc as _erfc
from math import sqrt as _sqrt

from numba import njit

_NEG_INV_SQRT2 = -1 / _sqrt(2)  # as ops/special.py's ndtr: the same rounding


@njit
def ndtr(x):
    return 0.5 * _erfc(x * _NEG_INV_SQRT2)
