"""exp, Φ, erfc and tanh in float32 arithmetic: 8 lanes per AVX2 instruction, for fused
float32 kernels whose every value is float32 (numba_cpu.py writes their constants as
float32 too).

vecmath.py computes in float64 lanes (4 per instruction) and stays what the LayerNorm and
cross-entropy row kernels use; softmax rows use this module's exp. Here a float32
exact-GELU loop runs twice as many elements per instruction. The accuracy that issue 11
asked of GELU's negative tail is kept by never rounding the large part of an exponent
twice: Φ(x) for x < 0 is ½·t·exp(−x²/2 + R(t)) (Numerical Recipes' erfc fit, fractional
error 1.2e-7), and exp is reduced on −x²/2 (one rounding of x·x) before R(t) is added, so
the big exponent (−50 at x = −10) never carries R's rounding.
Relative error against float64: exp ≤ 2.5e-7, Φ ≤ 3e-6 in the tail (x·x rounded to float32:
50·2⁻²⁴ at x = −10), tanh ≤ 3e-7. Functions without a float32 form here (log, sin, erf...)
are NumPy's float32 versions: correct, just not vectorized.
"""

from __future__ import annotations

import math as _math
from math import *  # noqa: F403 (the rest of ``math``, in float64, for formulas that use it)

import numpy as np
from numba import njit

from tgraph.codegen.vecmath import _bits_as_float32

F = np.float32
_FLAGS = dict(error_model="numpy", fastmath={"contract", "nsz"})  # no IR inlining: vecmath.py
_LOG2E = F(1.4426950408889634)
_C1 = F(0.693359375)  # ln 2 = _C1 + _C2; n·_C1 is exact for |n| < 2**15 (Cody and Waite)
_C2 = F(-2.12194440e-4)
_LO, _HI = F(-104.0), F(89.0)  # float32 holds only 0 below e**-104 and inf above e**89
_INV_SQRT2 = F(1 / _math.sqrt(2))
_HALF, _ONE, _TWO, _ZERO = F(0.5), F(1.0), F(2.0), F(0.0)
_INF = F(np.inf)
pi = F(_math.pi)
e = F(_math.e)


@njit(**_FLAGS)
def _scaled_exp(r, n):
    """e**r · 2**n for |r| ≤ ln2/2: Cephes expf's polynomial; 2**n from two int32 exponent
    fields (subnormal results too)."""
    p = F(1.9875691500e-4)
    p = p * r + F(1.3981999507e-3)
    p = p * r + F(8.3334519073e-3)
    p = p * r + F(4.1665795894e-2)
    p = p * r + F(1.6666665459e-1)
    p = p * r + F(5.0000001201e-1)
    p = p * r * r + r + _ONE
    k = np.int32(n)
    half = k >> np.int32(1)
    return (p * _bits_as_float32((half + np.int32(127)) << np.int32(23))
            * _bits_as_float32((k - half + np.int32(127)) << np.int32(23)))


@njit(**_FLAGS)
def _exp_sum(h, s):
    """e**(h + s), reduced on h alone (n·ln2 taken from h exactly), then s added: for h
    large and already rounded once, s of moderate size."""
    y = min(max(h + s, _LO), _HI)
    n = np.floor(y * _LOG2E + _HALF)
    out = _scaled_exp(((h - n * _C1) + s) - n * _C2, n)
    x = h + s
    out = _ZERO if x < _LO else out
    out = _INF if x > _HI else out
    return out if x == x else x  # NaN stays NaN


@njit(**_FLAGS)
def exp(x):
    return _exp_sum(x, _ZERO)


@njit(**_FLAGS)
def _tail(z, h):
    """½·erfc(z) for z ≥ 0 given h = −z² (rounded once): ½·t·e**(h + R(t))."""
    t = _ONE / (_ONE + _HALF * z)
    r = (F(-1.26551223) + t * (F(1.00002368) + t * (F(0.37409196) + t * (F(0.09678418) + t * (
        F(-0.18628806) + t * (F(0.27886807) + t * (F(-1.13520398) + t * (F(1.48851587) + t * (
            F(-0.82215223) + t * F(0.17087277))))))))))
    return _HALF * t * _exp_sum(h, r)


@njit(**_FLAGS)
def ndtr(x):
    """Φ(x), the standard normal CDF: the tail ½·erfc(|x|/√2) with −x²/2 taken from x."""
    a = abs(x)
    tail = _tail(a * _INV_SQRT2, -_HALF * (a * a))
    return tail if x < _ZERO else _ONE - tail


@njit(**_FLAGS)
def erfc(x):
    z = abs(x)
    tail = _TWO * _tail(z, -(z * z))
    return tail if x >= _ZERO else _TWO - tail


@njit(**_FLAGS)
def tanh(x):
    """Cephes tanhf: x + x³·P(x²) for |x| < 0.625, where 1 − 2/(e**2|x| + 1) would cancel."""
    z = abs(x)
    s = x * x
    small = ((((F(-5.70498872745e-3) * s + F(2.06390887954e-2)) * s - F(5.37397155531e-2)) * s
              + F(1.33314422036e-1)) * s - F(3.33332819422e-1)) * s * x + x
    big = _ONE - _TWO / (exp(_TWO * z) + _ONE)
    big = big if x >= _ZERO else -big
    return small if z < F(0.625) else big


@njit(**_FLAGS)
def sqrt(x):
    return np.sqrt(x)


@njit(**_FLAGS)
def log(x):
    return np.log(x)


@njit(**_FLAGS)
def sin(x):
    return np.sin(x)


@njit(**_FLAGS)
def cos(x):
    return np.cos(x)


@njit(**_FLAGS)
def erf(x):
    return F(_math.erf(x))


@njit(**_FLAGS)
def fabs(x):
    return abs(x)


@njit(**_FLAGS)
def isnan(x):
    return x != x


@njit(**_FLAGS)
def isinf(x):
    return abs(x) == _INF


@njit(**_FLAGS)
def isfinite(x):
    return abs(x) < _INF
