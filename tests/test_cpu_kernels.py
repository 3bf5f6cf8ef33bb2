"""The NumPy backend's compiled kernels against float64 references, with bounds from the
maths: vecmath's exp/erfc/tanh (vectorizable, for float32 results), vecmath32's (float32
arithmetic), the row kernels for
softmax, its gradient and the mask (tgraph/codegen/rows.py), and a float32 exact-GELU
gradient fused through vecmath."""

from __future__ import annotations

import os

import numpy as np
import pytest
from scipy import special

import tgraph as tg
from tgraph import builder as tb
from tgraph.backends.numpy_kernels import KERNELS
from tgraph.codegen import vecmath
from tgraph.ops.registry import get_op
from tgraph.passes import optimize

U32 = 2.0**-24  # float32 unit roundoff


def test_vecmath_functions_are_accurate_for_float32_results():
    x = np.linspace(-100, 88, 20001)
    assert max(abs(vecmath.exp(v) / np.exp(v) - 1) for v in x) < 1e-8
    z = np.linspace(-5, 9, 4001)  # erfc(9) = 4e-37, still a normal float32
    assert max(abs(vecmath.erfc(v) / special.erfc(v) - 1) for v in z) < 1.3e-7  # NR's fit
    t = np.r_[np.linspace(-20, 20, 4001), 1e-9, -3e-4, 0.0]
    assert max(abs(vecmath.tanh(v) - np.tanh(v)) / max(abs(np.tanh(v)), 1e-300) for v in t) < 1e-8
    assert np.isnan(vecmath.exp(np.nan)) and vecmath.exp(-np.inf) == 0.0
    assert vecmath.exp(np.inf) == np.inf and vecmath.tanh(np.inf) == 1.0
    assert vecmath.erfc(-np.inf) == 2.0 and vecmath.erfc(np.inf) == 0.0


def float32_loop(fn):
    """fn over a float32 array in a loop compiled as a fused elementwise float32 kernel is
    (vecmath32 inlined, the generator's flags for a chain without a row sum)."""
    from numba import njit

    @njit(fastmath={"contract", "nsz", "arcp"}, error_model="numpy")
    def loop(x, out):
        for i in range(x.size):
            out[i] = fn(x[i])

    def run(x):
        out = np.empty_like(x)
        loop(x, out)
        return out.astype(np.float64)

    return run


def test_vecmath32_functions_within_their_float32_bounds():
    """Against float64, where the result is a normal float32: exp and tanh a few roundings;
    Φ and erfc one more term, the exponent −x²/2 (−z²) rounded once to float32 (its size
    times u, relative), as any float32 evaluation of e**(−x²/2) has."""
    from tgraph.codegen import vecmath32

    tiny = np.finfo(np.float32).tiny
    x = np.arange(-87, 88, 1e-3, dtype=np.float32)
    want = np.exp(x.astype(np.float64))
    assert np.all(np.abs(float32_loop(vecmath32.exp)(x) - want) <= 3 * U32 * want)
    x = np.arange(-12.9, 9, 1e-4, dtype=np.float32)
    x64 = x.astype(np.float64)
    want, normal = special.ndtr(x64), special.ndtr(x64) >= tiny
    bound = (x64 * x64 / 2 + 10) * U32 * want
    assert np.all((np.abs(float32_loop(vecmath32.ndtr)(x) - want) <= bound)[normal])
    z = np.arange(-5, 9, 1e-4, dtype=np.float32)
    z64 = z.astype(np.float64)
    want = special.erfc(z64)
    bound = (np.where(z64 > 0, z64 * z64, 0) + 10) * U32 * want
    assert np.all(np.abs(float32_loop(vecmath32.erfc)(z) - want) <= bound)
    t = np.r_[np.arange(-20, 20, 1e-4), 1e-9, -3e-4, 0.0, 1e-30].astype(np.float32)
    want = np.tanh(t.astype(np.float64))
    assert np.all(np.abs(float32_loop(vecmath32.tanh)(t) - want) <= 4 * U32 * np.abs(want))
    special_values = np.array([np.nan, np.inf, -np.inf], np.float32)
    for fn, expected in ((vecmath32.exp, [np.nan, np.inf, 0]), (vecmath32.ndtr, [np.nan, 1, 0]),
                         (vecmath32.erfc, [np.nan, 0, 2]), (vecmath32.tanh, [np.nan, 1, -1])):
        np.testing.assert_array_equal(float32_loop(fn)(special_values), expected)


def scores(rng, shape, dtype):
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    x[..., 1, 2:] = -np.inf  # a masked tail
    x[..., 0, :] = -np.inf  # a fully masked row
    return x


def softmax32_bound(p, d, top):
    """First-order bound on a float32 softmax row kernel's weights p (float64 reference),
    d = x·c − max of the scaled scores (float64), top = |max|. Each e**d is off by
    ε = (3|d| + 6·top + 5)·u: the shift rounded (x·c, the max and their difference: (|d| +
    2·top)·u; c = scale rounded to float32: (|d| + top)·u; both within the 3|d| + 6·top
    allowed) and vecmath32's exp (2.5e-7 < 5u). The row's float32 sum, in any order, adds
    (n − 1)·u of the sum, the quotient one u: |p̂ − p| ≤ p·(ε + Σ p·ε + (n + 1)·u), plus
    one u of slack for the second-order terms."""
    n = p.shape[-1]
    eps = U32 * (3 * np.where(p > 0, np.abs(d), 0) + 6 * top + 5)
    return p * (eps + (p * eps).sum(-1, keepdims=True) + (n + 2) * U32)


@pytest.mark.parametrize("shape", [(2, 3, 6, 6), (4, 300, 40)])  # serial, and split
def test_softmax_rows_float32_within_their_error_bound(shape):
    x = scores(np.random.default_rng(0), shape, np.float32)
    got = KERNELS["softmax"](np, x, axis=-1)
    x64 = x.astype(np.float64)
    want = get_op("softmax").kernel(np, x64, axis=-1)
    assert got.dtype == np.float32 and np.all(got[..., 0, :] == 0)
    with np.errstate(invalid="ignore"):  # a fully masked row: −inf − (−inf)
        d = x64 - x64.max(-1, keepdims=True)
    assert np.all(np.abs(got - want) <= softmax32_bound(want, d, 0))


def test_softmax_rows_float64_agree_with_the_registry_kernel():
    x = scores(np.random.default_rng(1), (3, 5, 7, 7), np.float64)
    np.testing.assert_allclose(KERNELS["softmax"](np, x, axis=-1),
                               get_op("softmax").kernel(np, x, axis=-1), rtol=1e-13, atol=0)
    y = get_op("softmax").kernel(np, x, axis=1)  # not the last axis: the registry kernel
    np.testing.assert_array_equal(KERNELS["softmax"](np, x, axis=1), y)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_grad_rows_within_the_summation_bound(dtype):
    rng = np.random.default_rng(2)
    y = get_op("softmax").kernel(np, rng.standard_normal((4, 300, 50)), axis=-1).astype(dtype)
    g = rng.standard_normal(y.shape).astype(dtype)
    got = KERNELS["softmax_grad"](np, y, g, axis=-1)
    y64, g64 = y.astype(np.float64), g.astype(np.float64)
    gy = g64 * y64
    want = gy - y64 * gy.sum(-1, keepdims=True)
    u = U32 if dtype == np.float32 else 2.0**-53
    terms = np.abs(gy) + np.abs(y64) * np.abs(gy).sum(-1, keepdims=True)
    assert np.all(np.abs(got - want) <= (y.shape[-1] + 3) * u * terms)


@pytest.mark.parametrize("kw", [dict(causal=True), dict(window=2), dict(causal=True, window=1),
                                dict(causal=True, scale=0.125)])
@pytest.mark.parametrize("shape", [(2, 3, 6, 6), (3, 200, 5, 9), (2, 7, 4)])  # T < S, T > S
def test_masked_softmax_rows_float32_within_their_error_bound(shape, kw):
    """The row kernel against softmax(mask(scale·x)) in float64: rows whose queries see no
    key (T > S, causal) are zeros, like the registry's all −inf rows."""
    x = (np.random.default_rng(4).standard_normal(shape) * 4).astype(np.float32)
    got = KERNELS["masked_softmax"](np, x, **kw)
    pattern = {k: v for k, v in kw.items() if k != "scale"}
    scaled = x.astype(np.float64) * kw.get("scale", 1.0)
    masked = get_op("mask").kernel(np, scaled, **pattern)
    want = get_op("softmax").kernel(np, masked)
    assert got.dtype == np.float32 and np.all(got[want == 0] == 0)
    top = np.abs(np.where(np.isfinite(masked), masked, 0)).max(-1, keepdims=True)
    d = np.where(np.isfinite(masked), masked, 0) - masked.max(-1, keepdims=True)
    assert np.all(np.abs(got - want) <= softmax32_bound(want, d, top))
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(KERNELS["masked_softmax"](np, x64, **kw),
                               get_op("masked_softmax").kernel(np, x64, **kw), rtol=1e-13, atol=0)


@pytest.mark.parametrize("kw", [dict(causal=True), dict(window=2), dict(causal=True, window=1),
                                dict(causal=True, fill="0")])
@pytest.mark.parametrize("shape", [(2, 3, 5, 5), (2, 4, 7), (3, 200, 9, 9)])
def test_mask_rows_equal_the_registry_kernel(shape, kw):
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    np.testing.assert_array_equal(KERNELS["mask"](np, x, **kw),
                                  get_op("mask").kernel(np, x, **kw))


def test_float32_fused_gelu_gradient_is_within_float32_rounding():
    g = tg.Graph("gelu_grad")
    x = g.input("x", (64, 1024), "float32")
    up = g.input("g", (64, 1024), "float32")
    g.set_output("dx", tb.apply("gelu_grad", x, up, approximate="none"))
    fast = optimize(g, 2)[0]
    assert [n.op for n in fast.nodes] == ["fused"]
    rng = np.random.default_rng(4)
    xv = (rng.standard_normal((64, 1024)) * 3).astype(np.float32)
    gv = rng.standard_normal((64, 1024)).astype(np.float32)
    got = tg.run(fast, {"x": xv, "g": gv})["dx"]
    x64 = xv.astype(np.float64)
    phi = np.exp(-x64 * x64 / 2) / np.sqrt(2 * np.pi)
    cdf = special.ndtr(x64)
    want = gv * (cdf + x64 * phi)
    terms = np.abs(gv) * (cdf + np.abs(x64) * phi)
    # computed in float32 (vecmath32): −x²/2 is rounded once (x²/2·u relative in φ and in
    # Φ's tail), then about eight roundings and erfc's fit (1.2e-7, 2u); relative to the
    # size of the terms, with a floor where they are below float32's normal range
    assert np.all(np.abs(got - want) <= (x64 * x64 / 2 + 8) * U32 * terms + 1e-37)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layernorm_rows_within_rounding_of_float64(dtype):
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((3, 100, 64)) * 3 + 1).astype(dtype)
    gamma, beta = rng.standard_normal((2, 64)).astype(dtype)
    got = KERNELS["layernorm"](np, x, gamma, beta, eps=1e-5)
    x64, g64, b64 = (a.astype(np.float64) for a in (x, gamma, beta))
    xhat = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-5)
    want = xhat * g64 + b64
    u = U32 if dtype == np.float32 else 2.0**-53
    # the mean and 1/σ rounded to the dtype (the mean's rounding, u·|mean|, moves x̂ by
    # u·|mean|/σ), then x − mean, ·rstd, ·gamma, +beta each rounded once; the float64 sums
    # of d = x − x₀ (x₀ the row's first) are off by n·2⁻⁵³ of Σ|d| and Σd², which moves x̂ by
    # n·2⁻⁵³·(mean|d|/σ + |x̂|·mean d²/σ²)
    n, sigma = x.shape[-1], x64.std(-1, keepdims=True)
    mean = x64.mean(-1, keepdims=True)
    d = x64 - x64[..., :1]
    stats = n * 2.0**-53 * (np.abs(d).mean(-1, keepdims=True) / sigma
                            + np.abs(xhat) * (d * d).mean(-1, keepdims=True) / sigma**2)
    bound = (8 * u * (np.abs(xhat * g64) + np.abs(b64))
             + (u * np.abs(mean) / sigma + stats) * np.abs(g64))
    assert np.all(np.abs(got - want) <= bound)


@pytest.mark.parametrize("shape", [(4, 300, 50), (6, 2500)])  # rows of one block, and more
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_rows_against_float64(dtype, shape):
    from tgraph.codegen.rows import CE_BLOCK

    rng = np.random.default_rng(6)
    logits = (rng.standard_normal(shape) * 3).astype(dtype)
    n = shape[-1]
    targets = rng.integers(0, n, shape[:-1])
    got = KERNELS["cross_entropy"](np, logits, targets)
    x = logits.astype(np.float64)
    m = x.max(-1, keepdims=True)
    lse = np.log(np.exp(x - m).sum(-1)) + m[..., 0]
    per_row = lse - np.take_along_axis(x, targets[..., None], -1)[..., 0]
    assert got.dtype == dtype and got.shape == ()
    if dtype == np.float32:
        # per row: x − max rounded (|d|·u of each term), vecmath32's exp (< 5u), sums of
        # CE_BLOCK terms in float32 ((CE_BLOCK − 1)·u) added in float64, one log; then the
        # mean, rounded to float32
        p = np.exp(x - m) / np.exp(x - m).sum(-1, keepdims=True)
        rows = U32 * ((p * np.abs(x - m)).sum(-1) + 5 + min(n, CE_BLOCK) - 1)
        bound = rows.mean() + 2 * U32 * abs(per_row.mean())
    else:
        u = 2.0**-53
        bound = 4 * u * np.abs(lse).max() + 10 * u * np.abs(per_row).mean()
    assert abs(float(got) - per_row.mean()) <= bound


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_maxima_propagate_nan_as_the_registry_kernels_do(dtype):
    """The rows' maximum is LLVM's NaN-propagating ``maximum``, not a compare: a NaN
    anywhere in a row (first, last, past a vector's width) makes that row NaN, as NumPy's
    reference does, and leaves the other rows as they were."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((4, 37)).astype(dtype)
    for r, c in ((0, 0), (1, 36), (2, 17)):
        x[r, c] = np.nan
    with np.errstate(invalid="ignore"):
        want = get_op("softmax").kernel(np, x, axis=-1)
    got = KERNELS["softmax"](np, x, axis=-1)
    assert np.isnan(got[:3]).all() and np.isnan(want[:3]).all()
    np.testing.assert_allclose(got[3], want[3], rtol=1e-6)
    targets = np.zeros(4, np.int64)
    assert np.isnan(KERNELS["cross_entropy"](np, x, targets))
    assert np.isfinite(KERNELS["cross_entropy"](np, x[3:], targets[3:]))


def test_cross_entropy_rows_leave_a_bad_target_to_the_registry_kernel():
    logits = np.zeros((2, 3, 5), np.float32)
    with pytest.raises(IndexError):
        KERNELS["cross_entropy"](np, logits, np.array([[0, 1, 5], [0, 0, 0]]))
    with pytest.raises(IndexError):
        KERNELS["cross_entropy"](np, logits, np.array([[0, 1, 2], [0, -9, 0]]))


@pytest.mark.parametrize("shape", [(3, 40, 9), (8, 3000)])  # serial, and split
def test_cross_entropy_grad_rows_float32_within_the_softmax_bound(shape):
    """(softmax(x) − one_hot)·c, c = g/N: the softmax's weights within softmax32_bound, the
    scale c rounded to float32 and the products and the target's y − 1 a few u more."""
    rng = np.random.default_rng(8)
    logits = (rng.standard_normal(shape) * 3).astype(np.float32)
    logits[0, :3] = -np.inf  # masked classes
    targets = rng.integers(3, shape[-1], shape[:-1])
    g = np.array(1.7, np.float32)
    got = KERNELS["cross_entropy_grad"](np, logits, targets, g)
    x = logits.astype(np.float64)
    p = get_op("softmax").kernel(np, x, axis=-1)
    hits = targets[..., None] == np.arange(shape[-1])
    c = 1.7 / targets.size
    want = (p - hits) * c
    assert got.dtype == np.float32 and got.shape == logits.shape
    with np.errstate(invalid="ignore"):
        d = x - x.max(-1, keepdims=True)
    bound = abs(c) * (softmax32_bound(p, d, 0) + 4 * U32 * (p + hits))
    assert np.all(np.abs(got - want) <= bound)


def test_cross_entropy_grad_rows_float64_and_bad_targets_agree_with_the_registry_kernel():
    rng = np.random.default_rng(9)
    logits = rng.standard_normal((4, 6, 11)) * 3
    targets = rng.integers(0, 11, (4, 6))
    g = np.array(0.3)
    ref = get_op("cross_entropy_grad")
    want = ref.kernel(np, logits, targets, g)
    np.testing.assert_allclose(KERNELS["cross_entropy_grad"](np, logits, targets, g), want,
                               rtol=1e-13, atol=1e-16)
    targets[1, 2] = 11  # past the classes: the registry kernel's one-hot row is all zeros
    np.testing.assert_array_equal(KERNELS["cross_entropy_grad"](np, logits, targets, g),
                                  ref.kernel(np, logits, targets, g))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fused_adamw_step_follows_the_pure_update(dtype):
    """Three AdamW steps in place (one compiled loop per parameter) against the optimizer's
    pure formula run in float64 on the same inputs: float64 to rounding, float32 within a
    few ulps of each step's terms."""
    from tgraph.train.optim import AdamW

    rng = np.random.default_rng(7)
    params = {"w": rng.standard_normal((30, 20)).astype(dtype),
              "b": rng.standard_normal(20).astype(dtype)}
    fused, pure = AdamW(lr=1e-2, weight_decay=0.1), AdamW(lr=1e-2, weight_decay=0.1)
    ours = {k: a.copy() for k, a in params.items()}
    ref = {k: a.astype(np.float64) for k, a in params.items()}
    state = pure.init(ref)
    for _ in range(3):
        grads = {k: rng.standard_normal(a.shape).astype(dtype) for k, a in params.items()}
        fused.step(ours, grads)
        new, state = pure.update(ref, {k: g.astype(np.float64) for k, g in grads.items()},
                                 state, pure.lr)
        ref.update(new)
        ref = {k: a.astype(dtype).astype(np.float64) for k, a in ref.items()}  # as stored
    for k in params:
        assert ours[k].dtype == dtype
        u = 2.0**-53 if dtype == np.float64 else U32
        np.testing.assert_allclose(ours[k], ref[k], rtol=8 * u, atol=8 * u * 1e-2, err_msg=k)
    assert fused.state["t"] == 3
    # the moments are the optimizer's state, kept in place
    np.testing.assert_allclose(fused.state["m"]["w"], state["m"]["w"], rtol=1e-5, atol=1e-7)


def attention_operands(rng, dtype, b=2, t=6, h=3, d=4):
    """Q, K, V as the model slices them out of one projection (strided head views), and
    attention weights S: every layout the batched products meet, transposes included."""
    qkv = rng.standard_normal((b, t, 3, h, d)).astype(dtype)
    q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
    s = rng.standard_normal((b, h, t, t)).astype(dtype)
    return {"q@kT": (q, k.swapaxes(-1, -2)), "s@v": (s, v), "sT@q": (s.swapaxes(-1, -2), q),
            "vT@s": (v.swapaxes(-1, -2), s), "qT@v": (q.swapaxes(-1, -2), v),
            "broadcast batch": (s, v[:1]), "contiguous": (np.ascontiguousarray(q),
                                                          np.ascontiguousarray(k.swapaxes(-1, -2)))}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_on_strided_views_within_the_dot_product_bound(dtype):
    """Each product handed to the BLAS as it lies in memory: against float64 products of the
    same numbers, within γ_K·|a|·|b| (any summation order the BLAS picks)."""
    from tgraph.codegen import gemm

    u = U32 if dtype == np.float32 else 2.0**-53
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((2, 70, 33)).astype(dtype), rng.standard_normal((33, 90))
    cases = {**attention_operands(rng, dtype), "shared weight": (x, w.astype(dtype)),
             "weight transposed": (x, np.ascontiguousarray(w.T, dtype).T),
             "2-D, rows transposed": (x[0].T, x[1]), "batch of one": (x[:1], x[:1].swapaxes(-1, -2))}
    for name, (a, b) in cases.items():
        got = gemm.matmul(a, b)
        assert got is not None and got.dtype == dtype and got.flags.c_contiguous, name
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        want, terms = a64 @ b64, np.abs(a64) @ np.abs(b64)
        assert got.shape == want.shape, name
        assert np.all(np.abs(got - want) <= (a.shape[-1] + 1) * u * terms), name


def test_gemm_split_over_cores_gives_the_serial_bits(monkeypatch):
    """A GEMM's rows (or columns) and a batch's products split over the cores: each output
    element is the same dot product, so one core and two give the same bits, wherever the
    parts are cut (tgraph/parallel.py sizes them by each thread's speed)."""
    from tgraph import parallel
    from tgraph.codegen import gemm

    rng = np.random.default_rng(8)
    x = rng.standard_normal((4, 128, 256)).astype(np.float32)
    wide = rng.standard_normal((128, 1024)).astype(np.float32)
    cases = [(x, rng.standard_normal((256, 512)).astype(np.float32)),  # split by rows
             (x[0, :40], rng.standard_normal((256, 3000)).astype(np.float32)),  # by columns
             (x, x.swapaxes(-1, -2)),  # a batch
             (x[:1], x[:1].swapaxes(-1, -2)),  # a batch of one big product: split itself
             # K = 1024 and 256 columns: oneDNN's bits change with parts under ~112 columns
             (wide, rng.standard_normal((256, 1024)).astype(np.float32).T)]
    worker = parallel._workers()[0]
    for a, b in cases:
        assert a.shape[-2] * a.shape[-1] * b.shape[-1] >= gemm.SPLIT_MIN
        monkeypatch.setenv("NUMBA_NUM_THREADS", "1")
        serial = gemm.matmul(a, b)
        monkeypatch.setenv("NUMBA_NUM_THREADS", "2")
        for speed in (1.0, 0.3, 3.0):  # even parts, and parts sized for a slow worker or caller
            monkeypatch.setattr(worker, "speed", speed)
            monkeypatch.setattr(parallel, "SPEED_STEP", 0.0)
            np.testing.assert_array_equal(gemm.matmul(a, b), serial)


def test_gemm_remembers_its_split_by_layout_not_by_values():
    """A GEMM seen before in one layout (operands at the same addresses, shapes, strides,
    dtype) reuses its job: new values there are read, each result goes where it is asked
    (or to a fresh array), and another view of the same memory is another GEMM."""
    from tgraph.codegen import gemm

    rng = np.random.default_rng(10)
    a, b = (rng.standard_normal((4, 64, 64)).astype(np.float32) for _ in range(2))
    w = b[0]
    first = gemm.matmul(a, w)
    a *= 2  # the same memory, new values
    again = gemm.matmul(a, w)
    assert again is not first  # a fresh result each time
    np.testing.assert_array_equal(again, 2 * first)  # powers of two: exact
    a64, wt64 = a.astype(np.float64), w.T.astype(np.float64)  # same address, transposed:
    assert np.all(np.abs(gemm.matmul(a, w.T) - a64 @ wt64)  # within γ_K of a@wᵀ's products
                  <= 65 * U32 * (np.abs(a64) @ np.abs(wt64)))
    for _ in range(2):
        out = np.empty((4, 64, 64), np.float32)  # a new address each time, maybe
        assert gemm.matmul(a, w, out) is out
        np.testing.assert_array_equal(out, again)


def _installed(dist: str) -> bool:
    import importlib.metadata

    try:
        importlib.metadata.distribution(dist)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


@pytest.mark.parametrize("choice", ["", "openblas", "mkl", "onednn"])
def test_each_blas_gives_products_within_the_dot_product_bound(choice):
    """MKL on an Intel CPU when the ``mkl`` package is installed, oneDNN's float32 GEMM on
    another CPU with AVX-512 when ``onednn-cpu-gomp`` is, NumPy's OpenBLAS otherwise;
    TGRAPH_BLAS overrides. In a fresh process each (the binding is once per process), each
    within γ_K·|a|·|b| of float64 products."""
    import subprocess
    import sys

    from tgraph.codegen import blas

    code = """
import numpy as np
from tgraph.codegen import blas, gemm
rng = np.random.default_rng(3)
for dtype, u in ((np.float32, 2.0**-24), (np.float64, 2.0**-53)):
    a, b = (rng.standard_normal(s).astype(dtype) for s in ((3, 300, 70), (70, 500)))
    got = gemm.matmul(a, b.T.copy().T)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    assert np.all(np.abs(got - a64 @ b64) <= 71 * u * (np.abs(a64) @ np.abs(b64)))
print(blas.bind().name, bool(blas.bind().rows_sgemm))
"""
    env = {**os.environ, "TGRAPH_BLAS": choice}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    wanted = choice or blas.preferred()
    assert res.stdout.split()[-2:] == [
        "mkl" if _installed("mkl") and wanted == "mkl" else "openblas",
        str(wanted == "onednn" and _installed("onednn-cpu-gomp"))]


@pytest.mark.skipif(not _installed("onednn-cpu-gomp"), reason="onednn-cpu-gomp not installed")
def test_onednn_gemms_start_no_openmp_threads():
    """oneDNN runs its GEMM on an OpenMP team as wide as the calling thread's OpenMP count
    (the cores, by default): each part sets it to one, so a split GEMM runs on tgraph's two
    threads and no team of OpenMP threads appears beside them; and it puts the count back,
    which a library sharing the runtime (PyTorch) set for its own work."""
    import subprocess
    import sys

    code = """
import ctypes, os, numpy as np
from tgraph.codegen import blas, gemm
assert blas.bind().rows_sgemm
omp = ctypes.CDLL("libgomp.so.1")
omp.omp_set_num_threads(3)
a, b = np.ones((1024, 512), np.float32), np.ones((512, 1024), np.float32)
gemm.matmul(a.astype(np.float64), b.astype(np.float64))  # tgraph's worker, by OpenBLAS
before = set(os.listdir("/proc/self/task"))
for _ in range(3):
    assert (gemm.matmul(a, b) == 512).all()
print(len(set(os.listdir("/proc/self/task")) - before), omp.omp_get_max_threads())
"""
    env = {**os.environ, "TGRAPH_BLAS": "onednn", "NUMBA_NUM_THREADS": "2"}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split()[-2:] == ["0", "3"]


def test_one_thread_pins_the_blas_until_its_last_user_leaves():
    """Nested and concurrent uses: the BLAS stays on one thread while any is inside, and the
    count it had comes back when the last leaves (a use that restored on its own exit let a
    concurrent GEMM run threaded)."""
    import threading

    from tgraph.codegen import blas

    if blas.bind() is None or blas.bind().set_threads is None:
        pytest.skip("the BLAS in use has no process-wide thread count (MKL, sequential)")
    set_threads, get_threads = blas.bind().set_threads
    before = get_threads()
    set_threads(2)
    try:
        inside, leave = threading.Event(), threading.Event()
        seen = []

        def other():
            with blas.one_thread():
                inside.set()
                leave.wait(10)
                seen.append(get_threads())

        worker = threading.Thread(target=other)
        with blas.one_thread():
            worker.start()
            inside.wait(10)
            with blas.one_thread():
                assert get_threads() == 1
            assert get_threads() == 1
        assert get_threads() == 1  # the other thread is still inside
        leave.set()
        worker.join(10)
        assert seen == [1] and get_threads() == 2
    finally:
        set_threads(before)


def test_gemm_leaves_other_operands_to_numpy():
    from tgraph.codegen import gemm

    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 5, 4)).astype(np.float32)
    assert gemm.matmul(x[:, :, ::2], x[:, :2, :2]) is None  # no contiguous axis
    assert gemm.matmul(x.astype(np.int64), x[0].T.astype(np.int64)) is None  # not float
    assert gemm.matmul(x, x[0, :1].T) is None  # a matrix-vector product
    assert gemm.matmul(x, x[0].T.astype(np.float64)) is None  # mixed dtypes
    a, b = attention_operands(rng, np.float32)["q@kT"]
    np.testing.assert_array_equal(KERNELS["matmul"](np, a, b), gemm.matmul(a, b))
    v = x[0, :1].T
    np.testing.assert_array_equal(KERNELS["matmul"](np, x, v), get_op("matmul").kernel(np, x, v))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scatter_rows_add_in_np_add_at_order(dtype):
    """The embedding gradient's scatter: repeated ids summed in update order, as np.add.at
    does, so the result is bit for bit the registry kernel's; an id out of range is the
    registry kernel's error, not a write outside the table."""
    rng = np.random.default_rng(7)
    upd = rng.standard_normal((3, 50, 8)).astype(dtype)
    idx = rng.integers(0, 5, (3, 50))  # many repeats per row
    scatter, reference = KERNELS["scatter_add"], get_op("scatter_add").kernel
    np.testing.assert_array_equal(scatter(np, upd, idx, shape=[5, 8]),
                                  reference(np, upd, idx, shape=[5, 8]))
    base = rng.standard_normal((5, 8)).astype(dtype)
    want = reference(np, upd, idx, base, shape=[5, 8])
    np.testing.assert_array_equal(scatter(np, upd, idx, base, shape=[5, 8]), want)
    onto = base.copy()  # the executor's in-place write: onto the dying base itself
    assert scatter(np, upd, idx, onto, shape=[5, 8], into=onto) is onto
    np.testing.assert_array_equal(onto, want)
    with pytest.raises(IndexError):
        scatter(np, upd, np.full((3, 50), 5), shape=[5, 8])


ATTENTION_CASES = [(dict(causal=True, scale=0.25), 16, 16),
                   (dict(causal=True, scale=0.25), 150, 150),  # 5 blocks, the last short
                   (dict(causal=True), 70, 5),  # two blocks see no key
                   (dict(causal=True), 5, 9), (dict(causal=True, window=1), 7, 4),
                   (dict(window=2, scale=2.0), 6, 6)]


def head_views(rng, t, s, d, e, with_grad=False):
    """float32 q [2, 3, t, d], k [.., s, d], v [.., s, e] (and g [.., t, e]): heads sliced
    out of one [2, T, 3 or 4, 3, D] array, as a merged projection gives them."""
    rows = [t, s, s, t][:4 if with_grad else 3]
    width = [d, d, e, e][:len(rows)]
    x = rng.standard_normal((2, max(t, s), len(rows), 3, max(d, e))).astype(np.float32)
    return [x[:, :r, j, :, :w].transpose(0, 2, 1, 3) for j, (r, w) in enumerate(zip(rows, width))]


@pytest.mark.parametrize("kw,t,s", ATTENTION_CASES)
def test_attention_kernel_float32_within_its_error_bound(kw, t, s):
    """One (batch, head) at a time, q, k, v read as heads sliced out of one projection:
    against float64 of the same numbers, within u·(|P|·|V|)·(S + 2·scale·(D + 1)·m + w),
    m the row's largest |q|·|k| (the scores' GEMM error moves each weight by at most twice
    its share), S for the second GEMM's sums, w = 24·scale·m + S + 11 for the float32
    softmax (softmax32_bound with |d| ≤ 2·scale·m and top ≤ scale·m)."""
    d = 8
    q, k, v = head_views(np.random.default_rng(11), t, s, d, e=5)
    got = KERNELS["attention"](np, q, k, v, **kw)
    q64, k64, v64 = (x.astype(np.float64) for x in (q, k, v))
    ref = get_op("attention")
    want = ref.kernel(np, q64, k64, v64, **kw)
    assert got.dtype == np.float32 and got.shape == want.shape
    scores = q64 @ k64.swapaxes(-1, -2)
    p = get_op("masked_softmax").kernel(np, scores, **kw)
    m = (np.abs(q64) @ np.abs(k64).swapaxes(-1, -2)).max(-1, keepdims=True)
    scale = kw.get("scale", 1.0)
    bound = U32 * (np.abs(p) @ np.abs(v64)) * (s + 2 * scale * (d + 1) * m + 24 * scale * m + s + 11)
    assert np.all(np.abs(got - want) <= bound)
    np.testing.assert_array_equal(got[p.sum(-1) == 0], 0)  # queries that see no key
    np.testing.assert_allclose(KERNELS["attention"](np, q64, k64, v64, **kw), want,
                               rtol=1e-13)  # float64: the reference's own path
    every_other = [x[..., ::2] for x in (q, k, v)]  # no contiguous rows: the reference path
    np.testing.assert_array_equal(KERNELS["attention"](np, *every_other, **kw),
                                  ref.kernel(np, *every_other, **kw))


@pytest.mark.parametrize("kw,t,s", ATTENTION_CASES)
def test_attention_grad_kernel_float32_within_its_error_bound(kw, t, s):
    """(dq, dk, dv) one (batch, head) at a time, q, k, v and g read as heads sliced out of
    one array, against float64 of the same numbers. First-order bound, row i of the
    weights P: each weight is off by at most P·ε_i, ε_i = 2·scale·(D+1)·u·m_i + w·u (m_i the
    row's largest |q|·|k|, w = 24·scale·m_i + S + 11 the float32 softmax's share, as for
    attention); |dP| ≤ n_i, the row's largest |g|·|v|, so
    dS = scale·P∘(dP − Σ P∘dP) is off by at most P·r_i, r_i = scale·n_i·(3ε_i + (2E + 2S
    + 8)u); then each product adds its sums' γ: dq ≤ (r + 2(S+1)u·scale·n)·P·|k|, dk ≤
    Pᵀ·((r + 2(T+1)u·scale·n)·|q|), dv ≤ Pᵀ·((ε + (T+1)u)·|g|); twice that for the
    terms of second order."""
    d, e = 8, 5
    q, k, v, g = head_views(np.random.default_rng(13), t, s, d, e, with_grad=True)
    got = KERNELS["attention_grad"](np, q, k, v, g, **kw)
    q64, k64, v64, g64 = (x.astype(np.float64) for x in (q, k, v, g))
    ref = get_op("attention_grad")
    want = ref.kernel(np, q64, k64, v64, g64, **kw)
    p = get_op("masked_softmax").kernel(np, q64 @ k64.swapaxes(-1, -2), **kw)
    m = (np.abs(q64) @ np.abs(k64).swapaxes(-1, -2)).max(-1, keepdims=True)
    n = (np.abs(g64) @ np.abs(v64).swapaxes(-1, -2)).max(-1, keepdims=True)
    scale = kw.get("scale", 1.0)
    eps = U32 * (2 * scale * (d + 1) * m + 24 * scale * m + s + 11)
    r = scale * n * (3 * eps + (2 * e + 2 * s + 8) * U32)
    bounds = (2 * (r + 2 * (s + 1) * U32 * scale * n) * (p @ np.abs(k64)),
              2 * p.swapaxes(-1, -2) @ ((r + 2 * (t + 1) * U32 * scale * n) * np.abs(q64)),
              2 * p.swapaxes(-1, -2) @ ((eps + (t + 1) * U32) * np.abs(g64)))
    for x, y, bound in zip(got, want, bounds):
        assert x.dtype == np.float32 and x.shape == y.shape
        assert np.all(np.abs(x - y) <= bound)
    np.testing.assert_array_equal(got[0][p.sum(-1) == 0], 0)  # queries that see no key
    for x, y in zip(KERNELS["attention_grad"](np, q64, k64, v64, g64, **kw), want):
        np.testing.assert_allclose(x, y, rtol=1e-13)  # float64: the reference's own path
    every_other = [x[..., ::2] for x in (q, k, v, g)]  # no contiguous rows: the reference
    for x, y in zip(KERNELS["attention_grad"](np, *every_other, **kw),
                    ref.kernel(np, *every_other, **kw)):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("kw,t,s", ATTENTION_CASES)
def test_attention_kept_weights_are_the_softmax_and_give_the_same_gradient(kw, t, s):
    """attention with ``weights`` returns the same output and the weights it used: within
    the float32 softmax's bound of float64's, zero wherever the mask hides a key (past a
    causal block's last key too); attention_grad reading them gives what computing them
    again gives, bit for bit (the same products, in the same order)."""
    q, k, v, g = head_views(np.random.default_rng(13), t, s, 8, 5, with_grad=True)
    out, kept = KERNELS["attention"](np, q, k, v, weights=True, **kw)
    np.testing.assert_array_equal(out, KERNELS["attention"](np, q, k, v, **kw))
    q64, k64 = q.astype(np.float64), k.astype(np.float64)
    scale = kw.get("scale", 1.0)
    want = get_op("masked_softmax").kernel(np, q64 @ k64.swapaxes(-1, -2), **kw)
    m = (np.abs(q64) @ np.abs(k64).swapaxes(-1, -2)).max(-1, keepdims=True)
    bound = want * U32 * (2 * scale * (8 + 1) * m + 24 * scale * m + s + 11)
    assert kept.dtype == np.float32 and kept.flags.c_contiguous
    assert np.all(np.abs(kept - want) <= bound)
    np.testing.assert_array_equal(kept[want == 0], 0)
    for x, y in zip(KERNELS["attention_grad"](np, q, k, v, g, kept, **kw),
                    KERNELS["attention_grad"](np, q, k, v, g, **kw)):
        np.testing.assert_array_equal(x, y)


def test_attention_without_memory_for_its_buffers_raises_instead_of_returning_garbage():
    """attention's per-thread [T, S] buffers (here 2**48 floats each) cannot be allocated:
    one clear MemoryError before any loop runs."""
    q = np.ones((1, 1, 1 << 24, 1), np.float32)
    with pytest.raises(MemoryError, match=r"attention: no memory .*\[16777216, 16777216\]"):
        KERNELS["attention"](np, q, q, q, causal=True)


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("shape", [(3, 7), (4, 300, 64)])  # serial, and split
def test_layernorm_grad_rows_float32_within_their_rounding_bound(shape, residual):
    """(dx, dγ, dβ) of one row loop against the float64 closed form on the same numbers: the
    statistics are summed in float64 and rounded to float32, so each dx carries a few float32
    roundings of its terms, dx = rstd·(ĝ − mean ĝ − x̂·mean(ĝ·x̂)), each term's size times
    8u, and the mean's rounding (u·|mean|) moves x̂ by u·|mean|·rstd, and dx by that times
    rstd·|mean(ĝ·x̂)|. dγ and dβ are summed in float64 (per chunk of rows, then the chunks)
    and rounded to float32 once: 2u of the sum of their terms' sizes, and the same shift of
    x̂ in dγ's terms. With a residual r, dx + r: one more rounding, of |dx| + |r|."""
    rng = np.random.default_rng(12)
    x = (rng.standard_normal(shape) * 3 + 1).astype(np.float32)
    gamma = rng.standard_normal(shape[-1]).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    r = [rng.standard_normal(shape).astype(np.float32)] if residual else []
    dx, dgamma, dbeta = KERNELS["layernorm_grad"](np, x, gamma, g, *r, eps=1e-5)
    x64, gamma64, g64, *r64 = (a.astype(np.float64) for a in (x, gamma, g, *r))
    want = get_op("layernorm_grad").kernel(np, x64, gamma64, g64, *r64, eps=1e-5)
    xc = x64 - x64.mean(-1, keepdims=True)
    rstd = 1 / np.sqrt((xc * xc).mean(-1, keepdims=True) + 1e-5)
    xhat, gh = xc * rstd, g64 * gamma64
    terms = rstd * (np.abs(gh) + np.abs(gh).mean(-1, keepdims=True)
                    + np.abs(xhat) * np.abs(gh * xhat).mean(-1, keepdims=True))
    lead = tuple(range(len(shape) - 1))
    shift = U32 * np.abs(x64.mean(-1, keepdims=True)) * rstd  # in x̂, from the mean's rounding
    assert dx.dtype == dgamma.dtype == dbeta.dtype == np.float32
    assert dgamma.shape == dbeta.shape == shape[-1:]
    around = U32 * (np.abs(want[0]) + np.abs(r64[0])) if residual else 0
    assert np.all(np.abs(dx - want[0]) <= 8 * U32 * terms + around
                  + shift * rstd * np.abs(gh * xhat).mean(-1, keepdims=True))
    assert np.all(np.abs(dgamma - want[1])
                  <= 2 * U32 * np.abs(g64 * xhat).sum(lead) + (np.abs(g64) * shift).sum(lead))
    assert np.all(np.abs(dbeta - want[2]) <= 2 * U32 * np.abs(g64).sum(lead))
    got64 = KERNELS["layernorm_grad"](np, x64, gamma64, g64, *r64, eps=1e-5)
    for a, b in zip(got64, want):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * np.abs(b).max())


def test_concat_remembers_views_side_by_side_and_checks_them_each_time():
    """Views cut side by side from one array (pack_params' weights) concatenate to that
    array, the first time and when the same views come again (remembered by identity);
    other arrays in their place, reordered views, or new arrays after the views are gone
    (their ids free for reuse) give np.concatenate's values."""
    base = np.arange(24, dtype=np.float32).reshape(4, 6).copy()  # owns its memory
    parts = [base[:, :2], base[:, 2:4], base[:, 4:]]
    assert KERNELS["concat"](np, *parts, axis=1) is base
    assert KERNELS["concat"](np, *parts, axis=1) is base
    for xs in (parts[::-1], [parts[0], parts[1], np.full((4, 2), 7, np.float32)]):
        got = KERNELS["concat"](np, *xs, axis=1)
        np.testing.assert_array_equal(got, np.concatenate(xs, 1))
        assert not np.shares_memory(got, base)
    del parts, base
    for _ in range(3):
        fresh = [np.full((4, 2), float(j), np.float32) for j in range(3)]
        np.testing.assert_array_equal(KERNELS["concat"](np, *fresh, axis=1),
                                      np.concatenate(fresh, 1))


def test_concat_of_views_side_by_side_is_a_view_and_anything_else_a_copy():
    """attention_grad lays dq, dk, dv out as [B, T, 3, H, D]: merged back into [B, T, 3·H·D]
    their concat is that buffer (no copy). Views out of order, with a gap, of two arrays or
    of none give np.concatenate's copy; the values are np.concatenate's either way."""
    buffer = np.arange(2 * 3 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 3, 4, 5)
    heads = [buffer[..., j, :, :].reshape(2, 3, 20) for j in range(3)]
    joined = KERNELS["concat"](np, *heads, axis=-1)
    np.testing.assert_array_equal(joined, np.concatenate(heads, -1))
    assert np.shares_memory(joined, buffer)
    other = np.ones((2, 3, 20), np.float32)
    for xs in (heads[::-1], heads[::2], [heads[0], other], [other, other]):
        got = KERNELS["concat"](np, *xs, axis=-1)
        np.testing.assert_array_equal(got, np.concatenate(xs, -1))
        assert not any(np.shares_memory(got, x) for x in xs)
    assert np.shares_memory(KERNELS["concat"](np, buffer[:1], buffer[1:], axis=0), buffer)
