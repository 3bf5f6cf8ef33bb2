"""ONNX export: every built-in op, every model and the options that change its ops, forward
and forward+backward, checked by onnx.checker (full check), by ONNX shape inference against
tgraph's types, and by ONNX Runtime against tgraph run in float64 at two (B, T).

Tolerance: ORT computes in float32, so its error against the float64 reference is a few
float32 rounding errors (u = 6e-8) per op along a path of at most a few hundred ops, each
scaled by the values' magnitude: |ort − ref| ≤ 1e-4·(|ref| + max|ref|) holds with a wide
margin. Gradients that are exactly zero in exact arithmetic (the key bias b_k: softmax
ignores a shift of a row) are float32 noise, so a gradient's scale is the largest gradient
of its model."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest

import tgraph as tg
from tgraph.autodiff import grad
from tgraph.errors import TGraphError
from tgraph.feeds import random_feeds
from tgraph.interop import export_onnx, to_onnx_model
from tgraph.interop.onnx_export import check_onnx
from tgraph.interop.onnx_rules import RULES
from tgraph.interop.ort import OrtExecutable
from tgraph.models import build_model
from tgraph.ops import OpDef, all_ops, register_op, unregister_op

pytest.importorskip("onnxruntime")

RTOL = 1e-4


def close(got: np.ndarray, ref: np.ndarray, scale: float | None = None) -> bool:
    ref = np.asarray(ref, np.float64)
    scale = float(np.max(np.abs(ref), initial=0)) if scale is None else scale
    return bool(np.all(np.abs(got - ref) <= RTOL * (np.abs(ref) + scale)))


def as32(d: dict) -> dict:
    return {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in d.items()}


def test_every_builtin_op_has_a_rule_and_runs_in_ort():
    builtin = {n for n, d in all_ops().items() if d.source.startswith("tgraph.")}
    assert builtin <= set(RULES), f"no ONNX rule: {sorted(builtin - set(RULES))}"
    rng = np.random.default_rng(0)
    for name in sorted(builtin):
        for arrays, attrs in all_ops()[name].examples(rng):
            g = tg.Graph(name)
            ins = [g.input(f"x{i}", a.shape, "float32" if a.dtype == np.float64 else str(a.dtype))
                   for i, a in enumerate(arrays)]
            out = g.apply(name, ins, attrs)
            for i, v in enumerate(out if isinstance(out, tuple) else (out,)):
                g.set_output(f"y{i}", v)
            feeds64 = {f"x{i}": a for i, a in enumerate(arrays)}
            g64 = tg.Graph(name)  # the float64 reference: the same op on float64 inputs
            ins64 = [g64.input(f"x{i}", a.shape, str(a.dtype)) for i, a in enumerate(arrays)]
            out64 = g64.apply(name, ins64, attrs)
            for i, v in enumerate(out64 if isinstance(out64, tuple) else (out64,)):
                g64.set_output(f"y{i}", v)
            check_onnx(to_onnx_model(g))
            got, ref = OrtExecutable(g).run(as32(feeds64)), tg.run(g64, feeds64)
            for k in ref:
                assert got[k].shape == ref[k].shape and str(got[k].dtype) == g.outputs[k].dtype
                finite = np.isfinite(ref[k]) if ref[k].dtype.kind == "f" else True
                assert np.array_equal(np.isfinite(got[k]), finite) if ref[k].dtype.kind == "f" \
                    else np.array_equal(got[k], ref[k]), (name, attrs)
                if ref[k].dtype.kind == "f":
                    assert close(np.where(finite, got[k], 0), np.where(finite, ref[k], 0)), \
                        (name, attrs, np.max(np.abs(got[k] - ref[k])))


# the models, and the options that change which ops a model is made of
CASES = [
    ("gpt", {}), ("bert", {}), ("transformer", {}), ("vit", {}),
    ("gpt", {"pos": "rope", "norm": "post", "activation": "gelu_tanh"}),
    ("gpt", {"pos": "alibi", "heads": "batched", "window": 2, "embed": "one_hot"}),
    ("bert", {"pos": "sinusoidal", "score": "additive", "value_rank": 4}),
    ("transformer", {"tie_embeddings": False, "activation": "gelu", "n_dec_layers": 1}),
]


def dims_for(g, b, t):
    return {"B": b, "T": t, "S": t + 1}


def shape_inference_disagreements(model) -> list[str]:
    """Values whose ONNX-inferred type contradicts tgraph's (given as value_info)."""
    declared = {v.name: v.type.tensor_type for v in model.graph.value_info}
    bare = onnx.ModelProto()
    bare.CopyFrom(model)
    del bare.graph.value_info[:]
    inferred = onnx.shape_inference.infer_shapes(bare, strict_mode=True, data_prop=True)
    bad = []
    for v in inferred.graph.value_info:
        want = declared.get(v.name)
        if want is None:
            continue
        got = v.type.tensor_type
        if got.elem_type != want.elem_type or len(got.shape.dim) != len(want.shape.dim):
            bad.append(f"{v.name}: {got} vs {want}")
            continue
        for a, b in zip(got.shape.dim, want.shape.dim):
            if a.HasField("dim_value") and b.HasField("dim_value") and a.dim_value != b.dim_value:
                bad.append(f"{v.name}: dim {a.dim_value} vs {b.dim_value}")
            if a.HasField("dim_value") and b.HasField("dim_param"):
                bad.append(f"{v.name}: ONNX fixes {b.dim_param} to {a.dim_value}")
    return bad


@pytest.mark.parametrize("model,opts", CASES, ids=lambda c: str(c))
def test_model_exports_checks_and_runs_in_ort_forward_and_backward(model, opts):
    g = build_model(model, preset="tiny", loss=True, **opts)
    g64 = build_model(model, preset="tiny", loss=True, dtype="float64", **opts)
    params64 = tg.init_params(g64, 0)
    params = as32(params64)
    fb, fb64 = grad(g, "loss"), grad(g64, "loss")
    m = to_onnx_model(fb, params)
    check_onnx(m)
    assert shape_inference_disagreements(m) == []
    ort_fb = OrtExecutable(fb)
    for b, t in ((2, 5), (3, 8)):
        feeds = random_feeds(g, dims_for(g, b, t), seed=b)
        got, ref = ort_fb.run(feeds, params), tg.run(fb64, feeds, params64)
        grads = [k for k in ref if k.startswith("grad/")]
        scale = max(float(np.max(np.abs(ref[k]))) for k in grads)
        for k in ref:
            assert close(got[k], ref[k], scale if k in grads else None), (k, b, t)


def test_onnx_file_has_dynamic_dims_initializers_and_scoped_names(tmp_path):
    g = build_model("gpt", preset="tiny")
    params = tg.init_params(g, 0)
    model = export_onnx(g, tmp_path / "gpt.onnx", params, opset=20)
    m = onnx.load(tmp_path / "gpt.onnx")
    (tokens,) = m.graph.input
    assert [d.dim_param for d in tokens.type.tensor_type.shape.dim] == ["B", "T"]
    assert [d.dim_param for d in m.graph.output[0].type.tensor_type.shape.dim][:2] == ["B", "T"]
    inits = {t.name: t for t in m.graph.initializer}
    for name, a in params.items():
        assert np.array_equal(onnx.numpy_helper.to_array(inits[name]), a)
    names = [n.name for n in m.graph.node]
    assert "decoder/layer_1/self_attn/head_2/MatMul" in names
    assert any(n.op_type == "Gelu" for n in m.graph.node)  # opset 20 has it
    assert any(n.op_type == "LayerNormalization" for n in m.graph.node)
    assert len(model.graph.node) == len(m.graph.node)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp_path / "gpt.onnx"), providers=["CPUExecutionProvider"])
    feeds = random_feeds(g, {"B": 2, "T": 9})
    (y,) = sess.run(None, feeds)
    assert close(y, tg.run(g, feeds, params)["logits"])


def test_big_models_put_their_tensors_beside_the_file(tmp_path, monkeypatch):
    from tgraph.interop import onnx_export

    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_BYTES", 1000)  # stands in for 2 GiB
    g = build_model("gpt", preset="tiny")
    params = tg.init_params(g, 0)
    export_onnx(g, tmp_path / "gpt.onnx", params)
    assert (tmp_path / "gpt.onnx.data").stat().st_size > 400_000
    assert (tmp_path / "gpt.onnx").stat().st_size < 100_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpt.onnx", "gpt.onnx.data"]
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp_path / "gpt.onnx"), providers=["CPUExecutionProvider"])
    feeds = random_feeds(g, {"B": 1, "T": 4})
    assert close(sess.run(None, feeds)[0], tg.run(g, feeds, params)["logits"])
    from tgraph.interop import import_onnx

    _, weights = import_onnx(tmp_path / "gpt.onnx")  # reads the tensors from beside it
    assert all(np.array_equal(weights[k], params[k]) for k in params)


def test_plugin_ops_export_through_to_onnx_or_fail_naming_the_op():
    class Swish(OpDef):
        name = "test_swish"

        def infer(self, types, **attrs):
            return types[0]

        def kernel(self, xp, x):
            return x / (1 + xp.exp(-x))

    register_op(Swish)
    try:
        g = tg.Graph("p")
        x = g.input("x", ("B", 4))
        g.set_output("y", g.apply("test_swish", [x]))
        with pytest.raises(TGraphError, match="op 'test_swish' has no ONNX rule.*to_onnx"):
            to_onnx_model(g)
        Swish.to_onnx = lambda self, e, node, ins: e.op("Mul", [ins[0], e.op("Sigmoid", ins)])
        feeds = {"x": np.linspace(-3, 3, 8, dtype=np.float32).reshape(2, 4)}
        assert close(OrtExecutable(g).run(feeds)["y"], tg.run(g, feeds)["y"])
    finally:
        unregister_op("test_swish")


def test_fully_masked_rows_give_zeros_like_tgraph():
    g = tg.Graph("m")
    s = g.input("s", ("B", 3, 3))
    keep = g.input("keep", ("B", 1, 3), "bool")
    g.set_output("p", tg.builder.softmax(tg.builder.mask(s, keep)))
    feeds = {"s": np.ones((2, 3, 3), np.float32), "keep": np.array([[[0, 0, 0]], [[1, 0, 1]]],
                                                                    bool)}
    got = OrtExecutable(g).run(feeds)["p"]
    assert np.array_equal(got, tg.run(g, feeds)["p"]) and not np.isnan(got).any()


def test_ort_backend_checks_feeds_like_the_executor():
    g = build_model("gpt", preset="tiny")
    ex = OrtExecutable(g)
    params = tg.init_params(g, 0)
    with pytest.raises(TGraphError, match="has no input 'token'"):
        ex.run({"token": np.zeros((1, 2), np.int64)}, params)
    with pytest.raises(TGraphError, match="expects rank 2"):
        ex.run({"tokens": np.zeros((2,), np.int64)}, params)
    with pytest.raises(TGraphError, match="missing"):
        ex.run({"tokens": np.zeros((1, 2), np.int64)}, {})
    assert math.isfinite(float(ex.run({"tokens": np.zeros((1, 2), np.int64)}, params)[
        "logits"].sum()))


def test_cli_export_run_and_train_on_onnxruntime(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from tgraph.cli import main

    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    r = runner.invoke(main, ["export", "gpt", "--preset", "tiny", "--seed", "0", "-o", "g.onnx"])
    assert r.exit_code == 0, r.output
    onnx.checker.check_model(onnx.load("g.onnx"), full_check=True)
    r = runner.invoke(main, ["export", "gpt", "--preset", "tiny", "-o", "x.onnx"])
    assert r.exit_code == 1 and "--weights" in r.output and not (tmp_path / "x.onnx").exists()
    r = runner.invoke(main, ["grad", "gpt", "--preset", "tiny", "--loss", "-o", "fb.json"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["export", "fb.json", "--seed", "0", "-o", "fb.onnx"])
    assert r.exit_code == 0, r.output
    outs = {o.name for o in onnx.load("fb.onnx").graph.output}
    assert {"loss", "grad/embed/token_table"} <= outs
    runs = {}
    for backend in ("numpy", "ort"):
        r = runner.invoke(main, ["run", "gpt", "--preset", "tiny", "--random", "--dim", "B=2",
                                 "--dim", "T=6", "--backend", backend, "-o", f"{backend}.npz"])
        assert r.exit_code == 0, r.output
        runs[backend] = np.load(f"{backend}.npz")["logits"]
    assert close(runs["ort"], runs["numpy"])
    losses = {}
    for backend in ("numpy", "onnxruntime"):
        r = runner.invoke(main, ["train", "transformer", "--task", "reverse", "--preset", "tiny",
                                 "--steps", "4", "--batch", "8", "--backend", backend,
                                 "--optimizer", "sgd", "--lr", "0.5", "-o", f"{backend}.npz"])
        assert r.exit_code == 0, r.output
        losses[backend] = [float(x) for x in r.output.split("loss ")[1].split()[0:3:2]]
        losses[backend + "_w"] = np.load(f"{backend}.npz")
    # the same SGD steps on gradients that agree to float32 rounding (SGD, not Adam: Adam's
    # m/√v turns a gradient that is rounding noise, the key biases' or a weight's that
    # cancels, into a full-size step, so its weights part by more than the rounding)
    assert np.allclose(losses["numpy"], losses["onnxruntime"], rtol=1e-3)
    w_np, w_ort = losses["numpy_w"], losses["onnxruntime_w"]
    # the key biases' gradient is 0 in exact arithmetic (softmax ignores a per-row shift),
    # so they hold rounding noise only: measured against the model's largest weight
    biggest = max(float(np.abs(w).max()) for w in w_np.values())
    assert [k for k in w_np if not close(w_ort[k], w_np[k],
                                         biggest if k.endswith("/b_k") else None)] == []


@pytest.mark.parametrize("model,opts", [("transformer", {}),
                                        ("gpt", {"activation": "gelu_tanh"}),
                                        ("vit", {"activation": "relu"})], ids=str)
def test_float64_graphs_run_in_ort_to_float64_precision(model, opts):
    """ORT runs double precision for every exported op except Erf (exact GELU has no double
    kernel in ORT's CPU provider: that graph fails to load, naming the node). Its double
    LayerNormalization sums in another way: pre-LN models agree to ~1e-10 of each output's
    scale (post-LN to 1e-13), so the bound is 1e-9 of the scale, not float32's 1e-4."""
    g = build_model(model, preset="tiny", loss=True, dtype="float64", **opts)
    params, fb = tg.init_params(g, 0), grad(g, "loss")
    feeds = random_feeds(g, dims_for(g, 2, 5), seed=0)
    got, ref = OrtExecutable(fb).run(feeds, params), tg.run(fb, feeds, params)
    for k in ref:
        assert got[k].dtype == np.float64
        scale = float(np.max(np.abs(ref[k])))
        if k.startswith("grad/") and "/b_k" in k:
            continue  # a key bias's gradient is 0 in exact arithmetic: rounding on both sides
        np.testing.assert_allclose(got[k], ref[k], rtol=0, atol=1e-9 * scale, err_msg=k)


def test_exact_gelu_in_float64_is_one_clear_error_naming_the_node():
    from tgraph.errors import BackendError

    g = build_model("gpt", preset="tiny", dtype="float64", activation="gelu")
    with pytest.raises(BackendError, match=r"Erf.*decoder/layer_0/ffn"):
        OrtExecutable(g)


def test_the_cuda_provider_is_chosen_when_onnx_runtime_has_it(monkeypatch):
    import onnxruntime

    from tgraph.interop import ort as ort_backend

    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert ort_backend.providers() == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CPUExecutionProvider"])
    assert ort_backend.providers() == ["CPUExecutionProvider"]
