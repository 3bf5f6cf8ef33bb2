"""erf and the normal CDF Φ for the kernels, and a helper that runs an elementwise NumPy
formula cache-sized.

NumPy has no erf; SciPy's costs ~16 ns per element (it goes through double precision), which
made exact GELU and its gradient half of a CPU training step. For float32 NumPy arrays we
evaluate float32 approximations instead; float64 (the finite-difference checks) and CuPy keep
the library functions.

Exact GELU needs Φ(x) = ½·erfc(−x/√2), not ½·(1 + erf(x/√2)): in the negative tail erf → −1
and the sum cancels (at x ≈ −5.6 that left errors of 1e7 ulp). Φ is computed from the tail
½·erfc(|x|/√2), which has full relative accuracy, and 1 − tail for x > 0.
"""

from __future__ import annotations

import math

import numpy as np

# erf(x) ≈ x·P(x²)/Q(x²) on [-4, 4] (±1 beyond, in float32); highest power first.
_ERF_P = [np.float32(c) for c in (
    -2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
    -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
    -1.60960333262415e-02)]
_ERF_Q = [np.float32(c) for c in (
    -1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
    -7.37332916720468e-03, -1.42647390514189e-02)]

# erfc(z) ≈ t·exp(−z² + R(t)), t = 1/(1 + z/2), z ≥ 0: Numerical Recipes' Chebyshev fit,
# fractional error < 1.2e-7 for every z ≥ 0; highest power first.
_ERFC_R = [np.float32(c) for c in (
    0.17087277, -0.82215223, 1.48851587, -1.13520398, 0.27886807, -0.18628806,
    0.09678418, 0.37409196, 1.00002368, -1.26551223)]
_INV_SQRT2 = 1 / math.sqrt(2.0)  # a Python float: it keeps float32 formulas in float32

#: elements per chunk: the temporaries of a formula then stay in the L2 cache.
CHUNK = 1 << 16


def erf(xp, x):
    """Gauss error function with the backend's array namespace ``xp``."""
    if xp is np and x.dtype == np.float32:
        return chunked(erf_f32, x)
    return _library(xp).erf(x)


def ndtr(xp, x):
    """Φ(x), the standard normal CDF, accurate in relative terms in both tails."""
    if xp is np and x.dtype == np.float32:
        return chunked(ndtr_f32, x)
    return _library(xp).erfc(x * -_INV_SQRT2) * 0.5


def _library(xp):
    """The special-function module that goes with ``xp``: SciPy's, CuPy's or JAX's."""
    if xp is np:
        import scipy.special as special
    elif xp.__name__.startswith("jax"):
        import jax.scipy.special as special
    else:
        import cupyx.scipy.special as special
    return special


def ndtr_f32(x):
    """Φ of a float32 NumPy array (a new array): the tail ½·erfc(|x|/√2) by _ERFC_R, with
    −z² = −x²/2 taken from x itself (one rounding), then 1 − tail where x > 0."""
    z = np.abs(x)
    z *= np.float32(_INV_SQRT2)
    t = z * np.float32(0.5)
    t += 1
    np.reciprocal(t, out=t)
    e = _horner(t, _ERFC_R)
    half_x2 = x * x
    half_x2 *= np.float32(0.5)
    e -= half_x2
    np.exp(e, out=e)
    e *= t
    e *= np.float32(0.5)
    np.subtract(1, e, out=e, where=x > 0)
    return e


def erf_f32(x):
    """erf of a float32 NumPy array by the rational approximation (a new array)."""
    x = np.clip(x, np.float32(-4), np.float32(4))
    x2 = x * x
    p = _horner(x2, _ERF_P)
    p *= x
    p /= _horner(x2, _ERF_Q)
    return p


def _horner(x, coeffs):
    acc = np.full_like(x, coeffs[0])
    for c in coeffs[1:]:
        acc *= x
        acc += c
    return acc


def chunked(formula, *arrays, xp=np):
    """``formula(*arrays)`` for an elementwise formula on same-shaped arrays; on NumPy it is
    evaluated on flat chunks of CHUNK elements so that its temporaries stay in cache."""
    shape = arrays[0].shape
    if xp is not np or any(a.shape != shape for a in arrays) or arrays[0].size <= CHUNK:
        return formula(*arrays)
    flat = [np.ascontiguousarray(a).reshape(-1) for a in arrays]
    out = None
    for i in range(0, flat[0].size, CHUNK):
        part = formula(*(a[i:i + CHUNK] for a in flat))
        if out is None:
            out = np.empty(flat[0].size, part.dtype)
        out[i:i + CHUNK] = part
    return out.reshape(shape)
