"""The fused backward ops and the fast float32 erf and Φ against float64 references, on
arrays big enough to take the chunked path. In float64 they agree with torch to rounding.
In float32 each bound comes from the maths, never from another library's float32 error on
the host at hand (that depends on its CPU's vector extensions): a stated relative error
against the float64 value of the same float32 inputs, or the forward-error bound of a sum
(γ_n·Σ|terms|) where the exact result may cancel. check_op covers the VJPs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import special

import tgraph  # noqa: F401  (registers the built-in ops)
from tgraph.ops import get_op
from tgraph.ops.special import CHUNK

SHAPE = (3, 5, CHUNK // 7)  # more than one chunk, and a ragged last one
EPS32 = float(np.finfo(np.float32).eps)


def sample(dtype, *shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(s) * 3).astype(dtype) for s in shapes]


def assert_within(got, exact, bound, what):
    """|got − exact| ≤ bound elementwise, with the worst element named on failure."""
    err = np.abs(got.astype(np.float64) - exact)
    worst = np.unravel_index(np.argmax(err - bound), err.shape)
    assert (err <= bound).all(), (f"{what}: error {err[worst]:.3g} > bound {bound[worst]:.3g} "
                                  f"where the exact value is {exact[worst]:.6g}")


def gamma(n):
    """γ_n = n·u/(1 − n·u): the worst relative error of an n-term float32 sum or dot."""
    u = EPS32 / 2
    return n * u / (1 - n * u)


# ----- erf, GELU and its gradient: the closed forms, in float64 via SciPy --------------------
def test_erf_float32_within_8_ulp():
    (x,) = sample("float32", SHAPE)
    x.flat[:5] = [0.0, 1e-30, -1e-8, 4.5, -9.0]  # zero, tiny (relative accuracy), saturated
    exact = special.erf(x.astype(np.float64))
    ulp = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    # the rational approximation is good to ~5 ulp
    assert_within(get_op("erf").kernel(np, x), exact, 8 * ulp, "erf")


def gelu_exact(x):
    x = x.astype(np.float64)
    cdf, x_pdf = special.ndtr(x), x * np.exp(-x * x / 2) / math.sqrt(2 * math.pi)
    # the gradient Φ(x) + x·φ(x) crosses zero near x ≈ −0.75: its float32 error is bounded by
    # the size of its terms, as for any sum
    return x * cdf, cdf + x_pdf, cdf + np.abs(x_pdf)


def tail_grid():
    """Every float32 step of [−10, 10] at 2e-5, the negative tail included."""
    return np.linspace(-10, 10, 1_000_001).astype(np.float32)


@pytest.mark.parametrize("x", [tail_grid(), sample("float32", SHAPE)[0]], ids=["grid", "normal"])
def test_exact_gelu_float32_relative_error_below_1e_5(x):
    """GELU and its gradient in float32 over [−10, 10]: relative error ≤ 1e-5 against float64,
    the tail included (where ½·(1 + erf) used to cancel), with an absolute floor of the
    smallest normal float32 (Φ(−10) ≈ 7.6e-24 is still far above it)."""
    y, dy, dy_scale = gelu_exact(x)
    floor = float(np.finfo(np.float32).tiny)
    assert_within(get_op("gelu").kernel(np, x), y, 1e-5 * np.abs(y) + floor, "gelu")
    got = get_op("gelu_grad").kernel(np, x, np.ones_like(x))
    assert_within(got, dy, 1e-5 * dy_scale + floor, "gelu_grad")


@pytest.mark.parametrize("x", [tail_grid()], ids=["grid"])
def test_tanh_gelu_float32(x):
    """The tanh form: relative error ≤ 1e-5 against its own float64 formula, away from the
    tail where tanh → −1 cancels in any implementation (torch's included): there the bound is
    a few ulp of the terms, ½·|x|·(1 + |tanh|)·ε."""
    xd = x.astype(np.float64)
    t = np.tanh(math.sqrt(2 / math.pi) * (xd + 0.044715 * xd ** 3))
    y = 0.5 * xd * (1 + t)
    bound = 1e-5 * np.abs(y) + 8 * EPS32 * 0.5 * np.abs(xd) * (1 + np.abs(t))
    assert_within(get_op("gelu").kernel(np, x, approximate="tanh"), y, bound, "tanh gelu")


def torch_gelu_grad(approximate):
    def fn(x, g):
        x = x.clone().requires_grad_()
        torch.nn.functional.gelu(x, approximate=approximate).backward(g)
        return x.grad
    return fn


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_and_its_gradient_match_torch_in_float64(approximate):
    x, g = sample("float64", SHAPE, SHAPE)
    tx, tg = torch.from_numpy(x), torch.from_numpy(g)
    np.testing.assert_allclose(
        get_op("gelu").kernel(np, x, approximate=approximate),
        torch.nn.functional.gelu(tx, approximate=approximate).numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(
        get_op("gelu_grad").kernel(np, x, g, approximate=approximate),
        torch_gelu_grad(approximate)(tx, tg).numpy(), rtol=1e-12, atol=1e-13)


# ----- softmax's gradient and matmul: forward-error bounds of their sums --------------------
def softmax_grad_exact(y, g, axis):
    """y·(g − Σ y·g) in float64, and the bound of its float32 evaluation: the dot Σ y·g has
    error ≤ γ_n·Σ|y·g|, and the subtraction and product a few more roundings."""
    y, g = y.astype(np.float64), g.astype(np.float64)
    n = y.shape[axis]
    dot = (y * g).sum(axis, keepdims=True)
    scale = np.abs(y) * (np.abs(g) + np.abs(dot) + gamma(n) * (np.abs(y * g)).sum(axis, keepdims=True))
    return y * (g - dot), gamma(n + 4) * scale


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("axis", [-1, 1])
def test_softmax_grad(dtype, axis):
    x, g = sample(dtype, (4, 6, 33), (4, 6, 33))
    y = get_op("softmax").kernel(np, x, axis=axis)
    got = get_op("softmax_grad").kernel(np, y, g, axis=axis)
    exact, bound = softmax_grad_exact(y, g, axis)
    if dtype == "float64":
        tx = torch.from_numpy(x).requires_grad_()
        torch.softmax(tx, axis).backward(torch.from_numpy(g))
        np.testing.assert_allclose(got, tx.grad.numpy(), rtol=1e-12, atol=1e-13)
    else:
        assert_within(got, exact, bound, "softmax_grad")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shapes", [((2, 3, 4, 5), (5, 6)), ((2, 3, 5), (2, 5, 6))])
def test_matmul_on_strided_operands(dtype, shapes):
    """Within γ_K·(|A|·|B|) of the float64 product, whatever the BLAS's summation order."""
    a, b = sample(dtype, *shapes)
    strided = a.swapaxes(-1, -2).copy().swapaxes(-1, -2)  # same values, not C-contiguous
    got = get_op("matmul").kernel(np, strided, b)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    exact, k = a64 @ b64, a.shape[-1]
    u = EPS32 / 2 if dtype == "float32" else np.finfo(np.float64).eps / 2
    assert got.dtype == np.dtype(dtype)
    assert_within(got, exact, (k * u / (1 - k * u)) * (np.abs(a64) @ np.abs(b64)), "matmul")
