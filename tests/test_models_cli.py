"""`tgraph models` and `tgraph build`, and model names where a command takes GRAPH."""

import json

import numpy as np
from click.testing import CliRunner

import tgraph
from tgraph.cli import main


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_models_lists_models_presets_and_keys():
    r = invoke("models", "--json")
    assert r.exit_code == 0
    rows = {m["name"]: m for m in json.loads(r.output)}
    assert list(rows) == ["transformer", "gpt", "bert", "vit"]
    assert "gpt2-small" in rows["gpt"]["presets"] and "base" in rows["transformer"]["presets"]
    keys = {o["key"]: o for o in rows["vit"]["options"]}
    assert keys["heads"]["choices"] == ["split", "batched"] and "patch_size" in keys
    text = invoke("models").output
    assert "attention_mask bool[B,T]" in text and "pos=learned" in text


def test_build_writes_graph_and_weights_that_run(tmp_path):
    graph, weights = tmp_path / "g.json", tmp_path / "w.npz"
    r = invoke("build", "gpt", "--preset", "tiny", "--set", "n_layers=1", "--set",
               "heads=batched", "--loss", "-o", str(graph), "--weights", str(weights),
               "--seed", "3")
    assert r.exit_code == 0, r.output
    g = tgraph.load_graph(graph)
    assert g.meta["config"]["n_layers"] == 1 and set(g.outputs) == {"logits", "loss"}
    params = tgraph.load_weights(weights, g)
    assert all(np.array_equal(params[k], v) for k, v in tgraph.init_params(g, 3).items())
    r = invoke("run", str(graph), "--weights", str(weights), "--random", "--dim", "T=3")
    assert r.exit_code == 0 and "logits: float32[1, 3, 256]" in r.output


def test_run_takes_a_model_name():
    r = invoke("run", "bert", "--preset", "tiny", "--set", "n_layers=1", "--random",
               "--dim", "T=4")
    assert r.exit_code == 0 and "logits: float32[1, 4, 256]" in r.output


def test_build_errors_are_one_line(tmp_path):
    out = tmp_path / "g.json"
    r = invoke("build", "gpt", "--set", "pos=fourier", "-o", str(out))
    assert r.exit_code == 1 and not out.exists()
    assert r.output.strip() == ("error: config key 'pos' must be one of "
                                "sinusoidal|learned|rope|alibi, got 'fourier'")
    r = invoke("build", "gpt2", "-o", str(out))
    assert r.exit_code == 1 and "unknown model 'gpt2'" in r.output
