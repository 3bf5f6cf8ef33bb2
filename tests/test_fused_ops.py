"""The fused backward ops and the fast float32 erf against PyTorch on arrays big enough to
take the chunked path: in float64 they agree with torch to rounding; in float32 they are
at least about as accurate as torch's own float32 kernels (error measured against torch in
float64). check_op covers their VJPs by finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tgraph  # noqa: F401  (registers the built-in ops)
from tgraph.ops import get_op
from tgraph.ops.special import CHUNK

SHAPE = (3, 5, CHUNK // 7)  # more than one chunk, and a ragged last one


def sample(dtype, *shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(s) * 3).astype(dtype) for s in shapes]


def assert_like_torch(got, torch_fn, *arrays, ulps=4):
    """``got`` vs ``torch_fn`` on ``arrays``: to rounding in float64; in float32 no more
    than twice torch's own float32 error plus ``ulps`` ulp, both measured in float64."""
    exact = torch_fn(*(torch.from_numpy(a.astype(np.float64)) for a in arrays)).numpy()
    assert got.dtype == arrays[0].dtype
    if got.dtype == np.float64:
        return np.testing.assert_allclose(got, exact, rtol=1e-12, atol=1e-13)
    theirs = torch_fn(*(torch.from_numpy(a) for a in arrays)).double().numpy()
    ulp = np.spacing(np.abs(exact).astype(np.float32))
    assert (np.abs(got - exact) <= 2 * np.abs(theirs - exact).max() + ulps * ulp).all()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_erf_matches_torch(dtype):
    (x,) = sample(dtype, SHAPE)
    x.flat[:5] = [0.0, 1e-30, -1e-8, 4.5, -9.0]  # zero, tiny (relative accuracy), saturated
    # the float32 rational approximation is good to ~6 ulp (torch's erf to ~1)
    assert_like_torch(get_op("erf").kernel(np, x), torch.erf, x, ulps=8)


def torch_gelu_grad(approximate):
    def fn(x, g):
        x = x.clone().requires_grad_()
        torch.nn.functional.gelu(x, approximate=approximate).backward(g)
        return x.grad
    return fn


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_and_its_gradient_match_torch(dtype, approximate):
    x, g = sample(dtype, SHAPE, SHAPE)
    assert_like_torch(get_op("gelu").kernel(np, x, approximate=approximate),
                      lambda x: torch.nn.functional.gelu(x, approximate=approximate), x)
    assert_like_torch(get_op("gelu_grad").kernel(np, x, g, approximate=approximate),
                      torch_gelu_grad(approximate), x, g)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("axis", [-1, 1])
def test_softmax_grad_matches_torch(dtype, axis):
    x, g = sample(dtype, (4, 6, 33), (4, 6, 33))

    def torch_softmax_grad(x, g):
        x = x.clone().requires_grad_()
        torch.softmax(x, axis).backward(g)
        return x.grad

    y = get_op("softmax").kernel(np, x, axis=axis)
    assert_like_torch(get_op("softmax_grad").kernel(np, y, g, axis=axis), torch_softmax_grad,
                      x, g)


@pytest.mark.parametrize("shapes", [((2, 3, 4, 5), (5, 6)), ((2, 3, 5), (2, 5, 6))])
def test_matmul_matches_torch(shapes):
    a, b = sample("float64", *shapes)
    strided = a.swapaxes(-1, -2).copy().swapaxes(-1, -2)  # same values, not C-contiguous
    assert_like_torch(get_op("matmul").kernel(np, strided, b), torch.matmul, a, b)
