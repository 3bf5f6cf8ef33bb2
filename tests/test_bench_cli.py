"""tgraph bench and -O on the commands: what the issue promises a user sees."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

import tgraph as tg
from tgraph.cli import main

TINY = ["--set", "n_layers=1", "--set", "d_model=16", "--set", "n_heads=2", "--set", "d_ff=32",
        "--set", "vocab=11", "--set", "max_len=8", "--dim", "B=2", "--dim", "T=8"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_bench_json_has_the_promised_keys_at_every_level():
    for level in ("-O0", "-O2"):
        out = invoke("bench", "gpt", *TINY, level, "--repeats", "2", "--json", "-q")
        assert out.exit_code == 0, out.output
        r = json.loads(out.output)
        assert {"forward_ms", "step_ms", "compile_s", "peak_mb", "backend", "level",
                "nodes"} <= set(r)
        assert r["level"] == int(level[2:]) and r["backend"] == "numpy"
        assert r["forward_ms"] > 0 and r["step_ms"] > 0 and r["peak_mb"] > 0
        assert r["dims"] == {"B": 2, "T": 8}


def test_bench_on_onnx_runtime_names_it_and_does_not_invent_a_peak():
    import pytest

    pytest.importorskip("onnxruntime")
    for name in ("ort", "onnxruntime"):
        out = invoke("bench", "gpt", *TINY, "--backend", name, "--repeats", "1", "--json", "-q")
        assert out.exit_code == 0, out.output
        r = json.loads(out.output)
        assert r["backend"] == "onnxruntime" and r["forward_ms"] > 0 and r["step_ms"] > 0
        assert r["peak_mb"] is None and r["planned_mb"] is None  # ORT holds its arrays
    text = invoke("bench", "gpt", *TINY, "--backend", "ort", "--repeats", "1", "-q").output
    assert "peak memory   not seen: onnxruntime holds the arrays" in text


def test_bench_of_a_graph_without_loss_times_the_forward_only(tmp_path):
    g = tg.Graph("mm")
    x = g.input("x", ("B", 8), "float32")
    g.set_output("y", tg.builder.gelu(x @ g.param("w", (8, 8))))
    tg.save_graph(g, tmp_path / "g.json")
    out = invoke("bench", tmp_path / "g.json", "--dim", "B=4", "--repeats", "1", "--json", "-q")
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["step_ms"] is None


def test_bench_a_bad_level_is_a_usage_error():
    assert invoke("bench", "gpt", "-O3").exit_code == 2


def test_compile_O2_saves_a_fused_graph_that_runs_like_the_original(tmp_path):
    out = invoke("compile", "gpt", *TINY[:-4], "-O2", "-o", tmp_path / "f.json")
    assert out.exit_code == 0, out.output
    assert "fuse_elementwise" in out.output
    fast = tg.load_graph(tmp_path / "f.json")
    assert any(n.op == "fused" for n in fast.nodes)
    from tgraph.feeds import random_feeds
    from tgraph.models import build_model

    g = build_model("gpt", n_layers=1, d_model=16, n_heads=2, d_ff=32, vocab=11, max_len=8)
    params, feeds = tg.init_params(g, 0), random_feeds(g, {"B": 2, "T": 8}, 0)
    np.testing.assert_allclose(tg.run(fast, feeds, params)["logits"],
                               tg.run(g, feeds, params)["logits"], rtol=1e-4, atol=1e-5)


def test_run_and_train_take_O(tmp_path):
    out = invoke("run", "gpt", *TINY, "--random", "-O2")
    assert out.exit_code == 0, out.output
    assert "logits: float32[2, 8, 11]" in out.output
    out = invoke("train", "gpt", "--task", "text", "--data", "examples/data/corpus.txt",
                 *TINY[:-4], "--steps", "3", "--batch", "2", "--seq-len", "8", "-O2", "-q",
                 "-o", tmp_path / "w.npz")
    assert out.exit_code == 0, out.output
