"""tgraph.lower.to_jax: every op's JAX rule against its NumPy kernel, every model and option
jitted by XLA against tgraph's executor, jax.grad of the lowered loss against tgraph's own
grad() (two independent autodiffs), plugin ops, and the CLI's --backend jax.

Float64 throughout the comparisons (JAX's x64 mode): both sides then compute the same maths
in double precision, so they agree to a few ulps times the depth of the sums, far inside
1e-9; float32 is compared with a float64 reference at the models' stated 1e-4.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from click.testing import CliRunner
from test_models_reference import BASE, feeds_for, random_params

import tgraph as tg
from tgraph import builder as tb
from tgraph.autodiff import grad
from tgraph.cli import main
from tgraph.errors import LoweringError, TGraphError
from tgraph.models import build_model
from tgraph.ops import OpDef, register_op, unregister_op
from tgraph.ops.registry import all_ops

jax = pytest.importorskip("jax")
from tgraph.lower import to_jax  # noqa: E402

# one layer each: XLA's compile time grows with the graph, and one layer holds every op
SMALL = {m: {**cfg, "n_layers": 1} for m, cfg in BASE.items()}
SMALL["transformer"].update(n_enc_layers=1, n_dec_layers=1)
# every value of every option, three models' worth of combinations
COMBOS = [
    {"norm": "post", "pos": "sinusoidal", "activation": "relu"},
    {"norm": "pre", "pos": "rope", "heads": "batched", "value_rank": 3, "window": 1,
     "activation": "gelu"},
    {"pos": "alibi", "score": "additive", "activation": "gelu_tanh"},
    {"pos": "learned", "heads": "batched", "score": "additive", "value_rank": 3},
]
TOKEN_COMBOS = [{"tie_embeddings": True, "embed": "one_hot"}, {"tie_embeddings": False},
                {}, {}]
# the transformer's default (post-LN, sinusoidal, ReLU) is in the gradient test below
CASES = [(m, {**c, **(t if m != "vit" else {})})
         for m in ("gpt", "bert", "transformer", "vit")
         for c, t in zip(COMBOS, TOKEN_COMBOS)
         if (m != "vit" or c["pos"] not in ("rope", "alibi"))
         and (m != "transformer" or c["pos"] in ("rope", "alibi"))]
RTOL64 = 1e-9


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def close(got, ref, rtol, scale=None):
    """Elementwise, with the absolute floor at rtol × ``scale`` (default: the largest finite
    magnitude of ref): values that are mathematically zero hold only rounding."""
    got = np.asarray(got)
    assert got.shape == ref.shape and got.dtype == ref.dtype
    if ref.dtype.kind != "f":
        np.testing.assert_array_equal(got, ref)
        return
    if scale is None:
        finite = np.abs(ref[np.isfinite(ref)])
        scale = float(finite.max()) if finite.size else 0.0
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol * scale)


def test_every_builtin_op_lowers_to_its_numpy_results():
    rng = np.random.default_rng(0)
    builtin = {n: op for n, op in all_ops().items() if op.source.startswith("tgraph.ops")}
    assert len(builtin) > 40
    for name, op in builtin.items():
        cases = op.examples(rng)
        assert cases, f"op {name} has no examples to check"
        rule = op.jax_kernel or op.kernel

        @jax.jit
        def lowered(arrays, rule=rule, cases=cases):
            return [rule(jax.numpy, *a, **attrs) for a, (_, attrs) in zip(arrays, cases)]

        outs = lowered([[jax.numpy.asarray(a) for a in arrays] for arrays, _ in cases])
        for got, (arrays, attrs) in zip(outs, cases):
            ref = op.kernel(np, *[np.array(a, copy=True) for a in arrays], **attrs)
            for g, r in zip(got if isinstance(got, list | tuple) else [got],
                            ref if isinstance(ref, list | tuple) else [ref]):
                try:
                    close(g, np.asarray(r), RTOL64)
                except AssertionError as e:
                    raise AssertionError(f"op {name} {attrs}: {e}") from None


@pytest.mark.parametrize("model,options", CASES, ids=str)
def test_jitted_model_equals_numpy_executor(model, options):
    g = build_model(model, dtype="float64", **{**SMALL[model], **options})
    params, feeds = random_params(g), feeds_for(model, g)
    ref = tg.run(g, feeds, params)
    out = jax.jit(to_jax(g))(params, feeds)
    assert set(out) == set(ref)
    for k in ref:
        close(out[k], ref[k], RTOL64)


def test_float32_model_against_float64_reference():
    g = build_model("gpt", dtype="float32", **SMALL["gpt"], activation="gelu")
    params, feeds = random_params(g), feeds_for("gpt", g)
    g64 = build_model("gpt", dtype="float64", **SMALL["gpt"], activation="gelu")
    ref = tg.run(g64, feeds, {k: a.astype(np.float64) for k, a in params.items()})["logits"]
    with jax.enable_x64(False):
        got = np.asarray(jax.jit(to_jax(g))(params, feeds)["logits"])
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


@pytest.mark.parametrize("model,options", [
    ("gpt", {"activation": "gelu", "pos": "rope"}),           # split heads, causal mask
    ("transformer", {"norm": "post"}),                         # cross-attention, scatter_add
    ("bert", {"heads": "batched", "activation": "gelu_tanh"}),  # padding mask
], ids=str)
def test_jax_grad_equals_tgraph_grad(model, options):
    g = build_model(model, dtype="float64", loss=True, **{**SMALL[model], **options})
    params, feeds = random_params(g), feeds_for(model, g)
    cfg = g.meta["config"]
    logits_shape = tg.run(build_model(model, dtype="float64", **{**SMALL[model], **options}),
                          feeds, params)["logits"].shape
    feeds["targets"] = np.random.default_rng(2).integers(0, cfg.get("vocab", 5),
                                                         logits_shape[:-1])
    fb = grad(g, "loss")
    ours = tg.run(fb, feeds, params)
    lowered = to_jax(g)
    theirs = jax.jit(jax.grad(lambda p: lowered(p, feeds)["loss"]))(params)
    wrt = fb.meta["grad"]["wrt"]
    assert len(wrt) == len(params)
    # a key bias's gradient is zero (softmax ignores a shift): both sides hold rounding only,
    # so the floor is set by the largest gradient of all
    scale = max(float(np.abs(ours[out]).max()) for out in wrt.values())
    for name, out in wrt.items():
        close(theirs[name], ours[out], RTOL64, scale)


# ----- plugin ops ---------------------------------------------------------------------------
class _PluginOp(OpDef):
    signature = "plugin(x) -> like x"

    def infer(self, types, **attrs):
        return types[0]


@pytest.fixture
def plugin_ops():
    class PureSwish(_PluginOp):
        name = "test_pure_swish"

        def kernel(self, xp, x):
            return x / (1 + xp.exp(-x))

    class InPlaceSwish(_PluginOp):
        name = "test_inplace_swish"

        def kernel(self, xp, x):
            out = -x
            xp.exp(out, out=out)
            out += 1
            return x / out

    class RuledSwish(InPlaceSwish):
        name = "test_ruled_swish"

        def jax_kernel(self, jnp, x):
            return x * jax.nn.sigmoid(x)

    for op in (PureSwish, InPlaceSwish, RuledSwish):
        register_op(op)
    yield
    for op in (PureSwish, InPlaceSwish, RuledSwish):
        unregister_op(op.name)


def _one_op_graph(op):
    g = tg.Graph("plugged")
    x = g.input("x", ("B", 4), "float64")
    with g.scope("block/act"):
        g.set_output("y", tb.apply(op, x))
    return g


def test_plugin_ops_lower_by_their_kernel_or_their_rule(plugin_ops):
    x = np.linspace(-3, 3, 8).reshape(2, 4)
    want = x / (1 + np.exp(-x))
    for op in ("test_pure_swish", "test_ruled_swish"):
        close(jax.jit(to_jax(_one_op_graph(op)))({}, {"x": x})["y"], want, RTOL64)
    with pytest.raises(LoweringError, match=r"test_inplace_swish node .*scope block/act.*"
                                            r"no JAX rule.*jax_kernel"):
        jax.jit(to_jax(_one_op_graph("test_inplace_swish")))({}, {"x": x})


def test_float64_graph_without_x64_is_one_clear_error():
    with jax.enable_x64(False), pytest.raises(LoweringError, match="float64.*jax_enable_x64"):
        to_jax(_one_op_graph("relu"))


def test_feed_errors_are_tgraph_errors():
    fn = to_jax(_one_op_graph("relu"))
    with pytest.raises(TGraphError, match="missing feed for graph input 'x'"):
        fn({}, {})
    with pytest.raises(TGraphError, match="feed 'x' has shape 2×3"):
        fn({}, {"x": np.zeros((2, 3))})


# ----- the CLI ------------------------------------------------------------------------------
def test_cli_run_backend_jax_equals_numpy(tmp_path):
    runner = CliRunner()
    outs = {}
    for backend in ("numpy", "jax"):
        path = tmp_path / f"{backend}.npz"
        r = runner.invoke(main, ["run", "gpt", "--preset", "tiny", "--set", "n_layers=1",
                                 "--random", "--dim", "B=2", "--dim", "T=6", "--backend",
                                 backend, "-o", str(path)])
        assert r.exit_code == 0, r.output
        outs[backend] = np.load(path)["logits"]
    assert outs["jax"].dtype == np.float32
    ref = outs["numpy"].astype(np.float64)
    np.testing.assert_allclose(outs["jax"], ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_a_compiled_graph_lowers_too_its_fused_nodes_op_by_op():
    from tgraph.passes import optimize

    g = build_model("gpt", dtype="float64", **SMALL["gpt"], activation="gelu")
    fast = optimize(g, 2)[0]
    assert any(n.op == "fused" for n in fast.nodes)
    params, feeds = random_params(g), feeds_for("gpt", g)
    ref = tg.run(g, feeds, params)
    out = jax.jit(to_jax(fast))(params, feeds)
    for k in ref:
        close(out[k], ref[k], RTOL64)


def test_cli_bench_backend_jax(tmp_path):
    import json

    r = CliRunner().invoke(main, ["bench", "gpt", "--preset", "tiny", "--set", "n_layers=1",
                                  "--dim", "B=2", "--dim", "T=8", "--backend", "jax",
                                  "--repeats", "2", "--json"])
    assert r.exit_code == 0, r.output
    row = json.loads(r.output[r.output.index("{"):])
    assert row["backend"] == "jax" and row["forward_ms"] > 0 and row["step_ms"] > 0
    assert row["peak_mb"] is None  # XLA holds the arrays


def test_without_jax_the_commands_say_so_in_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "jax", None)  # import jax now raises ImportError
    for args in (["run", "gpt", "--preset", "tiny", "--random"],
                 ["train", "gpt", "--task", "text", "--data", "examples/data/corpus.txt",
                  "--preset", "tiny", "--steps", "1", "-o", "never.npz"]):
        r = CliRunner().invoke(main, [*args, "--backend", "jax"])
        assert r.exit_code == 1, r.output
        assert r.output.strip().splitlines() == [
            "error: JAX is not installed: pip install 'tgraph[jax]' (or pip install jax)"]


@pytest.mark.parametrize("backend,devices,message", [
    ("jax", "2", "error: 2 devices asked for, but JAX sees 1 (cpu): on CPU, "
                 "XLA_FLAGS=--xla_force_host_platform_device_count=N before starting gives N"),
    ("numpy", "2", "error: --devices 2 needs --backend jax: the numpy backend trains on one "
                   "device"),
])
def test_cli_train_devices_errors(backend, devices, message, tmp_path):
    if backend == "jax" and len(jax.devices()) > 1:
        pytest.skip("this process sees several devices")
    r = CliRunner().invoke(main, ["train", "transformer", "--task", "reverse", "--preset", "tiny",
                                  "--steps", "1", "--backend", backend, "--devices", devices,
                                  "-o", str(tmp_path / "w.npz")])
    assert r.exit_code == 1
    assert r.output.strip().splitlines() == [message]
    assert not list(tmp_path.iterdir())


def test_jax_executable_speaks_the_backend_protocol():
    from tgraph.runtime import executable

    g = build_model("gpt", **SMALL["gpt"])
    ex = executable(g, "jax")
    params, feeds = random_params(g), feeds_for("gpt", g)
    out = ex.run_device(feeds, params)
    ex.backend.synchronize()
    assert ex.backend.name == "jax" and ex.graph is g
    logits = ex.backend.to_numpy(out["logits"])
    ref = tg.run(g, feeds, params)["logits"].astype(np.float64)
    np.testing.assert_allclose(logits, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    bad = dict(feeds, tokens=np.full_like(feeds["tokens"], 23))  # one past the vocabulary
    with pytest.raises(TGraphError, match=r"feed 'tokens' holds id 23; ids must be in \[0, 23\)"):
        ex.run(bad, params)
