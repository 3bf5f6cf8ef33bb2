"""ONNX import: PyTorch models exported with torch.onnx.export in the test, imported, run
and differentiated by tgraph against torch (float32, rtol 1e-4 of each tensor's scale: a
few hundred float32 ops of rounding 6e-8 each), drawn with their layers folded; the round
trip tgraph → ONNX → tgraph; safe reading."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

import tgraph as tg
from tests.onnx_torch_models import GPT, VOCAB, D, Encoder, EncoderDecoder, export
from tgraph import builder as tb
from tgraph.autodiff import grad
from tgraph.cli import main
from tgraph.errors import TGraphError
from tgraph.feeds import random_feeds
from tgraph.interop import Limits, export_onnx, import_onnx
from tgraph.models import build_model
from tgraph.render.fold import Folding
from tgraph.render.hierarchy import ScopeTree

pytest.importorskip("onnxruntime")

RTOL = 1e-4


def close(got, ref) -> bool:
    ref = np.asarray(ref, np.float64)
    return bool(np.all(np.abs(got - ref) <= RTOL * (np.abs(ref) + np.max(np.abs(ref)))))


def distinct_weights(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Fresh random weights: cloned layers start identical, and the exporter would share
    identical initializers between them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2 + (1 if p.ndim == 1 else 0) * 0.1)
    return model.eval()


def fold_titles(graph) -> list[str]:
    return sorted(r.title() for r in Folding.of(ScopeTree.of(graph)).runs)


def torch_grads_by_value(model, weights, fb, out):
    """(torch name, tgraph gradient, torch gradient) for every torch parameter. tgraph's
    parameters are matched to torch's by value, since the exporter stores some weights
    transposed under generated names; a tied weight (GPT's token table, read again
    transposed by the head) imports as one parameter."""
    named = dict(model.named_parameters())
    total = {}
    for name, gname in fb.meta["grad"]["wrt"].items():
        w = weights[name]
        hit = [(n, out[gname]) for n, p in named.items()
               if p.shape == w.shape and np.array_equal(p.detach().numpy(), w)]
        hit += [(n, out[gname].T) for n, p in named.items()
                if p.ndim == 2 and p.T.shape == w.shape and np.array_equal(p.detach().numpy().T, w)]
        assert len(hit) == 1, name
        total[hit[0][0]] = total.get(hit[0][0], 0) + hit[0][1]
    assert sorted(total) == sorted(named)
    return [(n, total[n], p.grad.numpy()) for n, p in named.items()]


def with_loss(g, r: np.ndarray):
    """loss = Σ y·y·r (r broadcast over the leading axes): its gradient 2·y·r differs at
    every position, so every weight receives a generic cotangent."""
    with g.scope("loss"):
        y = g.outputs["y"]
        g.set_output("loss", tb.sum(y * y * g.const(r)))
    return g


def torch_loss(y, r):
    return (y * y * torch.from_numpy(r)).sum()


@pytest.fixture(scope="module")
def gpt_onnx(tmp_path_factory):
    torch.manual_seed(0)
    model = distinct_weights(GPT(), 1)
    path = tmp_path_factory.mktemp("gpt") / "gpt.onnx"
    export(model, (torch.randint(0, VOCAB, (2, 7)),), path, ["tokens"],
           {"tokens": {0: "B", 1: "T"}})
    return model, path


def test_gpt_in_torch_nn_imports_runs_differentiates_and_folds(gpt_onnx):
    model, path = gpt_onnx
    g, w = import_onnx(path)
    assert [str(v.type) for v in g.inputs] == ["int64[B×T]"]
    assert {"mask", "softmax", "layernorm", "matmul", "gather", "positions"} <= {
        n.op for n in g.nodes}
    for b, t in ((2, 7), (3, 12)):
        tokens = torch.randint(0, VOCAB, (b, t), generator=torch.Generator().manual_seed(t))
        ref = model(tokens).detach().numpy()
        assert close(tg.run(g, {"tokens": tokens.numpy()}, w)["y"], ref)
    r = np.random.default_rng(0).standard_normal(VOCAB).astype(np.float32)
    fb = grad(with_loss(g, r), "loss")
    tokens = torch.randint(0, VOCAB, (3, 12), generator=torch.Generator().manual_seed(5))
    model.zero_grad()
    torch_loss(model(tokens), r).backward()
    out = tg.run(fb, {"tokens": tokens.numpy()}, w)
    for name, got, ref in torch_grads_by_value(model, w, fb, out):
        assert close(got, ref), name
    assert "layer ×2" in fold_titles(g)
    # the tied token table, which the exporter stores twice (once transposed for the head),
    # is one parameter: training updates both of its uses together, as in torch
    table = model.tok.weight.detach().numpy()
    copies = [k for k, a in w.items()
              if np.array_equal(a, table) or (a.ndim == 2 and np.array_equal(a.T, table))]
    assert len(copies) == 1, copies


def test_nn_transformer_encoder_imports_and_matches_torch_autograd(tmp_path):
    torch.manual_seed(0)
    model = distinct_weights(Encoder(), 2)
    # the TorchScript exporter bakes nn.MultiheadAttention's sequence length into its
    # reshapes, so T is fixed on import (B stays dynamic)
    export(model, (torch.randn(2, 5, D),), tmp_path / "enc.onnx", ["x"], {"x": {0: "B"}})
    g, w = import_onnx(tmp_path / "enc.onnx")
    assert [str(v.type) for v in g.inputs] == [f"float32[B×5×{D}]"]
    for b in (2, 4):
        x = torch.randn(b, 5, D, generator=torch.Generator().manual_seed(b))
        assert close(tg.run(g, {"x": x.numpy()}, w)["y"], model(x).detach().numpy())
    r = np.random.default_rng(1).standard_normal((5, D)).astype(np.float32)
    fb = grad(with_loss(g, r), "loss", wrt=[*(p.name for p in g.params), "x"])
    x = torch.randn(3, 5, D, generator=torch.Generator().manual_seed(9), requires_grad=True)
    model.zero_grad()
    torch_loss(model(x), r).backward()
    out = tg.run(fb, {"x": x.detach().numpy()}, w)
    assert close(out["grad/x"], x.grad.numpy())
    fb.meta["grad"]["wrt"].pop("x")
    for name, got, ref in torch_grads_by_value(model, w, fb, out):
        assert close(got, ref), name
    assert fold_titles(g) == ["layer ×2"]


def test_nn_transformer_encoder_decoder_imports_and_matches_torch(tmp_path):
    torch.manual_seed(0)
    model = distinct_weights(EncoderDecoder(), 3)
    src, tgt = torch.randint(0, VOCAB, (2, 6)), torch.randint(0, VOCAB, (2, 5))
    export(model, (src, tgt), tmp_path / "ed.onnx", ["src", "tgt"],
           {"src": {0: "B"}, "tgt": {0: "B"}})
    g, w = import_onnx(tmp_path / "ed.onnx")
    for b in (2, 3):
        gen = torch.Generator().manual_seed(b)
        src, tgt = torch.randint(0, VOCAB, (b, 6), generator=gen), torch.randint(0, VOCAB, (b, 5),
                                                                                 generator=gen)
        ref = model(src, tgt).detach().numpy()
        assert close(tg.run(g, {"src": src.numpy(), "tgt": tgt.numpy()}, w)["y"], ref)
    titles = fold_titles(g)
    assert titles.count("layer ×2") == 2  # the encoder's and the decoder's
    r = np.random.default_rng(2).standard_normal((5, VOCAB)).astype(np.float32)
    fb = grad(with_loss(g, r), "loss")
    model.zero_grad()
    torch_loss(model(src, tgt), r).backward()
    out = tg.run(fb, {"src": src.numpy(), "tgt": tgt.numpy()}, w)
    for name, got, ref in torch_grads_by_value(model, w, fb, out):
        assert close(got, ref), name


@pytest.mark.parametrize("model", ["gpt", "transformer", "bert", "vit"])
def test_round_trip_gives_the_same_graph_numbers_and_diagram(model, tmp_path):
    g = build_model(model, preset="tiny", loss=True)
    params = tg.init_params(g, 0)
    export_onnx(g, tmp_path / "m.onnx", params)
    g2, w2 = import_onnx(tmp_path / "m.onnx")
    assert [(n.op, n.scope, n.attrs) for n in g2.nodes] == [(n.op, n.scope, n.attrs)
                                                           for n in g.nodes]
    assert set(w2) == set(params) and all(np.array_equal(w2[k], params[k]) for k in params)
    feeds = random_feeds(g, {"B": 2, "T": 6, "S": 7})
    a, b = tg.run(g, feeds, params), tg.run(g2, feeds, w2)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert fold_titles(g2) == fold_titles(g)


def test_generic_path_without_tgraph_metadata_gives_the_same_numbers(tmp_path):
    g = build_model("gpt", preset="tiny", loss=True, window=3)
    params = tg.init_params(g, 0)
    m = export_onnx(g, tmp_path / "m.onnx", params)
    for n in m.graph.node:  # as another tool would write it: no tgraph.* metadata
        del n.metadata_props[:]
    onnx.save(m, tmp_path / "plain.onnx")
    g2, w2 = import_onnx(tmp_path / "plain.onnx")
    for b, t in ((2, 6), (1, 9)):
        feeds = random_feeds(g, {"B": b, "T": t})
        a, c = tg.run(g, feeds, params), tg.run(g2, feeds, w2)
        assert all(close(c[k], a[k]) for k in a)
    ga, gc = grad(g, "loss"), grad(g2, "loss")
    feeds = random_feeds(g, {"B": 2, "T": 5})
    a, c = tg.run(ga, feeds, params), tg.run(gc, feeds, w2)
    assert close(c["grad/decoder/layer_1/ffn/w_1"], a["grad/decoder/layer_1/ffn/w_1"])


def test_cli_import_render_and_the_unsupported_op_error(gpt_onnx, tmp_path, monkeypatch):
    _, path = gpt_onnx
    runner = CliRunner()
    monkeypatch.chdir(tmp_path)
    if True:
        r = runner.invoke(main, ["import", str(path), "-o", "g.json", "--weights", "w.npz"])
        assert r.exit_code == 0, r.output
        r = runner.invoke(main, ["render", "g.json", "-o", "g.dot"])
        assert r.exit_code == 0 and "layer ×2" in open("g.dot", encoding="utf-8").read()
        r = runner.invoke(main, ["run", "g.json", "--weights", "w.npz", "--random", "--dim",
                                 "B=2", "--dim", "T=5", "--backend", "ort"])
        assert r.exit_code == 0 and "y: float32[2, 5, 50]" in r.output
        m = onnx.load(path)
        m.graph.node[3].op_type = "NonMaxSuppression"
        onnx.save(m, "bad.onnx")
        r = runner.invoke(main, ["import", "bad.onnx", "-o", "bad.json"])
        assert r.exit_code == 1
        line = r.output.strip()
        assert "\n" not in line and "'NonMaxSuppression'" in line and m.graph.node[3].name in line
        assert "supported: Abs, Add" in line
        import os

        assert not os.path.exists("bad.json")


def test_reading_is_bounded_and_external_data_stays_beside_the_model(tmp_path):
    g = build_model("gpt", preset="tiny")
    params = tg.init_params(g, 0)
    m = export_onnx(g, tmp_path / "m.onnx", params)
    with pytest.raises(TGraphError, match="nodes is past the import limit"):
        import_onnx(tmp_path / "m.onnx", limits=Limits(nodes=10))
    with pytest.raises(TGraphError, match="embed/token_table.* past the import limit"):
        import_onnx(tmp_path / "m.onnx", limits=Limits(tensor_bytes=1000))
    (tmp_path / "x.onnx").write_bytes(b"\x00not a model")
    with pytest.raises(TGraphError, match="x.onnx"):
        import_onnx(tmp_path / "x.onnx")
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\1" * (256 * 64 * 4))
    sub = tmp_path / "sub"
    sub.mkdir()
    for location in ("../secret.bin", str(secret), "/dev/zero"):
        bad = onnx.ModelProto()
        bad.CopyFrom(m)
        t = next(t for t in bad.graph.initializer if t.name == "embed/token_table")
        t.ClearField("raw_data")
        t.data_location = onnx.TensorProto.EXTERNAL
        t.external_data.add(key="location", value=location)
        onnx.save(bad, sub / "evil.onnx")
        with pytest.raises(TGraphError, match=re.escape(repr(location)) + ".*beside the model"):
            import_onnx(sub / "evil.onnx")


def test_scopes_from_node_names_and_from_torch_export_metadata():
    from onnx import helper

    from tgraph.interop.onnx_import import scope_of

    assert scope_of(helper.make_node("MatMul", ["a", "b"], ["c"],
                                     name="/layers.0/self_attn/MatMul_1")) == "layers/0/self_attn"
    assert scope_of(helper.make_node("Add", ["a", "b"], ["c"], name="Add_3")) == ""
    n = helper.make_node("MatMul", ["a", "b"], ["c"], name="node_MatMul_4")
    helper.set_metadata_props(n, {"pkg.torch.onnx.name_scopes":
                                  "['', 'layers.0', 'layers.0.self_attn', 'linear']"})
    assert scope_of(n) == "layers/0/self_attn"
    hostile = helper.make_node("Relu", ["a"], ["b"], name='/x"]; URL=evil/..//Relu')
    assert scope_of(hostile) == "x____URL_evil"


@pytest.mark.skipif(not __import__("os").environ.get("TGRAPH_ONNX_DYNAMO"),
                    reason="the torch.export-based exporter takes 20-40 s on 2 cores: "
                           "make test-onnx-dynamo")
def test_torch_export_based_exporter_keeps_b_and_t_dynamic(tmp_path):
    torch.manual_seed(0)
    model = distinct_weights(Encoder(), 4)
    b, t = torch.export.Dim("B"), torch.export.Dim("T")
    torch.onnx.export(model, (torch.randn(2, 5, D),), str(tmp_path / "enc.onnx"), dynamo=True,
                      input_names=["x"], output_names=["y"],
                      dynamic_shapes={"x": {0: b, 1: t}})
    g, w = import_onnx(tmp_path / "enc.onnx")
    assert [str(v.type) for v in g.inputs] == [f"float32[B×T×{D}]"]
    for shape in ((2, 5), (3, 9)):
        x = torch.randn(*shape, D, generator=torch.Generator().manual_seed(shape[1]))
        assert close(tg.run(g, {"x": x.numpy()}, w)["y"], model(x).detach().numpy())
    assert fold_titles(g) == ["layer ×2"]
