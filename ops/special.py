"""erf for the kernels, and a helper that runs an elementwise NumPy formula cache-sized.

NumPy has no erf; SciPy's costs ~16 ns per element (it goes through double precision), which
made exact GELU and its gradient half of a CPU training step. For float32 NumPy arrays we
evaluate Eigen's/XLA's float32 rational approximation instead (max error ~5 ulp, ~4× faster);
float64 (the finite-difference checks) and CuPy keep the library erf.
"""

from __future__ import annotations

import numpy as np

# erf(x) ≈ x·P(x²)/Q(x²) on [-4, 4] (±1 beyond, in float32); highest power first.
_ERF_P = [np.float32(c) for c in (
    -2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
    -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
    -1.60960333262415e-02)]
_ERF_Q = [np.float32(c) for c in (
    -1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
    -7.37332916720468e-03, -1.42647390514189e-02)]

#: elements per chunk: the temporaries of a formula then stay in the L2 cache.
CHUNK = 1 << 16


def erf(xp, x):
    """Gauss error function with the backend's array namespace ``xp``."""
    if xp is np and x.dtype == np.float32:
        return chunked(erf_f32, x)
    if xp is np:
        from scipy.special import erf as f
    else:
        from cupyx.scipy.special import erf as f
    return f(x)


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
