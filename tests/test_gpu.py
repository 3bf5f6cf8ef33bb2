"""The CuPy backend against the NumPy backend on the same graphs, weights and feeds.

Tests marked ``gpu`` need CuPy and a working CUDA device and skip cleanly otherwise. The
unmarked ones check what a machine without a device must do: ``--backend cupy`` fails
in one line with exit code 1, and ``auto`` runs on NumPy.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import tgraph as tg
from tgraph.backends import NumpyBackend, get_backend
from tgraph.errors import BackendError
from tgraph.feeds import random_feeds
from tgraph.ops import all_ops
from tgraph.ops.registry import get_op

gpu = pytest.mark.gpu
F32 = {"rtol": 1e-4, "atol": 1e-5}  # one kernel, float32
DEEP = {"rtol": 2e-3, "atol": 2e-4}  # many kernels in float32: reduction order differs

ROOT = Path(__file__).resolve().parents[1]


def _demo():
    spec = importlib.util.spec_from_file_location("tgraph_demo", ROOT / "examples" / "demo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def attention_block() -> tg.Graph:
    """The README demo's attention block: matmuls, causal mask, softmax, layernorm."""
    return _demo().attention_block()


def device_problem() -> str | None:
    """Why the CuPy backend cannot run here, or None when it can."""
    try:
        get_backend("cupy")
    except BackendError as e:
        return str(e)
    return None


@pytest.fixture(scope="module")
def cupy_backend():
    problem = device_problem()
    if problem:
        pytest.skip(problem)
    return get_backend("cupy")


# ----- without a device -------------------------------------------------------------------

def test_cli_backend_cupy_without_device_is_one_line_and_exit_1(tmp_path):
    if device_problem() is None:
        pytest.skip("a CUDA device works here")
    tg.save_graph(attention_block(), tmp_path / "att.json")
    r = subprocess.run([sys.executable, "-m", "tgraph", "run", str(tmp_path / "att.json"),
                        "--random", "--backend", "cupy"], check=False, capture_output=True,
                       text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 1
    assert r.stdout == ""
    assert re.fullmatch(r"error: CuPy is (not installed: pip install -e '\.\[gpu\]' in a checkout "
                        r"of tgraph \(or pip install cupy-cuda12x\)|"
                        r"installed but no CUDA device/driver is usable: .+)\n", r.stderr)


def test_auto_without_device_runs_on_numpy():
    if device_problem() is None:
        pytest.skip("a CUDA device works here")
    g = attention_block()
    params, feeds = tg.init_params(g, 0), random_feeds(g, seed=0)
    ex = tg.Executable(g, "auto")
    assert isinstance(ex.backend, NumpyBackend)
    np.testing.assert_array_equal(ex.run(feeds, params)["y"], tg.run(g, feeds, params)["y"])


class _NoDeviceCupy(types.ModuleType):
    """Stands in for cupy-cuda12x on a machine without a driver: imports, fails on use."""

    float32 = np.float32

    def arange(self, *a, **k):
        raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected\n(details)")


def test_installed_cupy_without_device(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", _NoDeviceCupy("cupy"))
    with pytest.raises(BackendError) as e:
        get_backend("cupy")
    assert str(e.value) == ("CuPy is installed but no CUDA device/driver is usable: "
                            "cudaErrorNoDevice: no CUDA-capable device is detected")
    assert get_backend("auto").name == "numpy"


def test_cupy_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` fail
    with pytest.raises(BackendError, match=r"^CuPy is not installed: pip install -e '\.\[gpu\]' "):
        get_backend("cupy")
    assert get_backend("auto").name == "numpy"


def test_unknown_backend_name():
    with pytest.raises(BackendError, match="unknown backend 'tpu'"):
        get_backend("tpu")


# ----- on a device: ops -------------------------------------------------------------------

def builtin_ops(need_vjp=False) -> list[str]:
    """Built-in ops only: a plugin a test registers for a while may be gone when this runs."""
    return sorted(n for n, d in all_ops().items()
                  if d.source.startswith("tgraph.ops.") and (d.has_vjp or not need_vjp))


def to_f32(a):
    a = np.asarray(a)
    return a.astype(np.float32) if a.dtype == np.float64 else a


def one_node(op: str, arrays, attrs):
    """A graph whose inputs x0, x1, ... feed one `op` node; returns it with the outputs."""
    g = tg.Graph(op)
    ins = [g.input(f"x{i}", a.shape, str(a.dtype)) for i, a in enumerate(arrays)]
    out = g.apply(op, ins, attrs)
    return g, out if isinstance(out, tuple) else (out,)


def assert_same(g: tg.Graph, feeds, backend, tol, params=None):
    """Outputs of `g` on NumPy and on `backend` agree within `tol`; returns NumPy's."""
    want = tg.Executable(g, "numpy", check=True).run(feeds, params)
    got = tg.Executable(g, backend, check=True).run(feeds, params)
    for k, w in want.items():
        assert isinstance(got[k], np.ndarray), k
        assert got[k].dtype == w.dtype and got[k].shape == w.shape, k
        np.testing.assert_allclose(got[k], w, equal_nan=True, err_msg=f"output {k}", **tol)
    return want


def cases(op: str):
    rng = np.random.default_rng(0)
    found = [([to_f32(a) for a in arrays], attrs) for arrays, attrs in get_op(op).examples(rng)]
    if not found:
        pytest.skip(f"op {op!r} has no examples")
    return found


@gpu
@pytest.mark.parametrize("op", builtin_ops())
def test_op_forward_matches_numpy(cupy_backend, op):
    for arrays, attrs in cases(op):
        g, outs = one_node(op, arrays, attrs)
        for i, v in enumerate(outs):
            g.set_output(f"y{i}", v)
        assert_same(g, {f"x{i}": a for i, a in enumerate(arrays)}, cupy_backend, F32)


@gpu
@pytest.mark.parametrize("op", builtin_ops(need_vjp=True))
def test_op_vjp_matches_numpy(cupy_backend, op):
    """The VJP rule's graph (cotangents dy0, dy1, ... in, input cotangents out) on both."""
    rng = np.random.default_rng(1)
    for arrays, attrs in cases(op):
        g, outs = one_node(op, arrays, attrs)
        dys = [g.input(f"dy{i}", v.shape, v.dtype) for i, v in enumerate(outs)]
        grads = get_op(op).vjp(outs[0].node, dys)
        for i, dx in enumerate(grads):
            if dx is not None:
                g.set_output(f"dx{i}", dx)
        if not g.outputs:
            continue
        feeds = {f"x{i}": a for i, a in enumerate(arrays)}
        feeds.update({f"dy{i}": rng.standard_normal(v.shape).astype(v.dtype)
                      for i, v in enumerate(outs)})
        assert_same(g, feeds, cupy_backend, F32)


# ----- on a device: the overrides' edges, against the registry's NumPy kernels ------------

def both(cupy_backend, op: str, arrays, **attrs):
    cp = cupy_backend.xp
    got = cupy_backend.kernels[op](cp, *[cp.asarray(a) for a in arrays], **attrs)
    return cp.asnumpy(got), get_op(op).kernel(np, *arrays, **attrs)


@gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(3, 1), (4, 77), (2, 3, 1000), (2, 3000)])
def test_row_kernels(cupy_backend, dtype, shape):
    """Rows shorter and longer than a thread block, not powers of two."""
    rng = np.random.default_rng(2)
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    gamma, beta = (rng.standard_normal(shape[-1:]).astype(dtype) for _ in range(2))
    tol = F32 if dtype == "float32" else {"rtol": 1e-12, "atol": 1e-13}
    np.testing.assert_allclose(*both(cupy_backend, "softmax", [x]), **tol)
    np.testing.assert_allclose(*both(cupy_backend, "layernorm", [x, gamma, beta], eps=1e-5),
                               **tol)


@gpu
def test_softmax_masked_rows_and_other_layouts(cupy_backend):
    x = np.random.default_rng(3).standard_normal((4, 6, 9)).astype(np.float32)
    x[0, 0, :] = -np.inf  # fully masked: zeros, not NaN
    x[1, :, 5:] = -np.inf  # causal-style partial masking
    got, want = both(cupy_backend, "softmax", [x])
    np.testing.assert_allclose(got, want, **F32)
    assert not np.isnan(got).any() and (got[0, 0] == 0).all()
    for arrays, attrs in (([x.transpose(2, 0, 1)], {"axis": -1}), ([x], {"axis": 1})):
        np.testing.assert_allclose(*both(cupy_backend, "softmax", arrays, **attrs), **F32)


@gpu
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_kernel(cupy_backend, approximate):
    x = np.random.default_rng(4).standard_normal((5, 300)).astype(np.float32) * 4
    np.testing.assert_allclose(*both(cupy_backend, "gelu", [x], approximate=approximate), **F32)


# ----- on a device: the executor and whole models -----------------------------------------

@gpu
def test_executor_returns_numpy_and_tracks_device_memory(cupy_backend):
    g = attention_block()
    params, feeds = tg.init_params(g, 0), random_feeds(g, seed=0)
    assert_same(g, feeds, cupy_backend, DEEP, params)
    ex = tg.Executable(g, cupy_backend)
    cupy_backend.reset_peak_memory()
    out = ex.run_device(feeds, params)
    assert isinstance(out["y"], cupy_backend.xp.ndarray)
    held = sum(a.nbytes for a in (*feeds.values(), *params.values()))
    assert cupy_backend.peak_memory_bytes() >= held


def models():
    from tgraph.models import MODELS

    return sorted(MODELS)


@gpu
@pytest.mark.parametrize("name", models())
def test_model_forward_matches_numpy(cupy_backend, name):
    from tgraph.models import build_model

    g = build_model(name, preset="tiny")
    assert_same(g, random_feeds(g, seed=0), cupy_backend, DEEP, tg.init_params(g, 0))


@gpu
@pytest.mark.parametrize("name", models())
def test_model_gradients_match_numpy(cupy_backend, name):
    from tgraph.autodiff import grad
    from tgraph.models import build_model

    g = grad(build_model(name, preset="tiny", loss=True), "loss")
    assert_same(g, random_feeds(g, seed=0), cupy_backend, DEEP, tg.init_params(g, 0))


@gpu
@pytest.mark.parametrize("name", models())
def test_compiled_training_graph_runs_fused_kernels_on_the_device(cupy_backend, name):
    """-O2's fused nodes become one ElementwiseKernel each (reductions: op by op), and the
    forward+backward graph agrees with NumPy's."""
    from tgraph.codegen.cuda import CupyFusedKernel
    from tgraph.models import build_model
    from tgraph.passes import training_graph

    g = training_graph(build_model(name, preset="tiny", loss=True), "loss", 2)
    ex = tg.Executable(g, cupy_backend)
    assert any(isinstance(st.kernel, CupyFusedKernel) for st in ex.steps)
    assert_same(g, random_feeds(g, seed=0), cupy_backend, DEEP, tg.init_params(g, 0))


@gpu
def test_sgd_steps_agree(cupy_backend):
    """A device-resident training loop (weights stay on the GPU between steps) follows the
    NumPy loop's losses step by step, and the loss falls."""
    from tgraph.autodiff import grad
    from tgraph.models import build_model

    if "gpt" not in models():
        pytest.skip("no gpt model")
    g = grad(build_model("gpt", preset="tiny", loss=True), "loss")
    feeds = random_feeds(g, seed=0)
    traces = []
    for backend in ("numpy", cupy_backend):
        ex = tg.Executable(g, backend)
        dev = ex.backend.asarray
        params = {k: dev(a) for k, a in tg.init_params(g, 0).items()}
        batch = {k: dev(a) for k, a in feeds.items()}
        trace = []
        for _ in range(4):
            out = ex.run_device(batch, params)
            trace.append(float(out["loss"]))
            params = {k: p - 0.5 * out[f"grad/{k}"] if f"grad/{k}" in out else p
                      for k, p in params.items()}
        traces.append(trace)
    np.testing.assert_allclose(traces[1], traces[0], rtol=1e-3)
    assert traces[0][-1] < traces[0][0]
