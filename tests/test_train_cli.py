"""tgraph grad / train / generate from the command line (short runs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from click.testing import CliRunner

import tgraph as tg
from tgraph.cli import main

CORPUS = Path(__file__).resolve().parents[1] / "examples" / "data" / "corpus.txt"


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_grad_writes_a_forward_backward_graph(tmp_path):
    r = invoke("grad", "gpt", "--preset", "tiny", "--loss", "--wrt", "embed/token_table",
               "-o", tmp_path / "fb.json")
    assert r.exit_code == 0, r.output
    g = tg.load_graph(tmp_path / "fb.json")
    assert set(g.outputs) == {"logits", "loss", "grad/embed/token_table"}
    assert any(n.scope.startswith("backward/") for n in g.nodes)


def test_grad_without_a_loss_says_how_to_get_one(tmp_path):
    r = invoke("grad", "gpt", "-o", tmp_path / "fb.json")
    assert r.exit_code == 1 and "--loss" in r.output and not (tmp_path / "fb.json").exists()


def test_train_reverse_then_text_and_generate(tmp_path):
    r = invoke("train", "transformer", "--task", "reverse", "--preset", "tiny", "--steps", 3,
               "--batch", 8, "-o", tmp_path / "rev.npz")
    assert r.exit_code == 0, r.output
    assert "accuracy" in r.output and (tmp_path / "rev.json").exists()
    weights = tg.load_weights(tmp_path / "rev.npz", tg.load_graph(tmp_path / "rev.json"))
    assert all(np.isfinite(a).all() for a in weights.values())

    r = invoke("train", "gpt", "--task", "text", "--data", CORPUS, "--preset", "tiny",
               "--set", "n_layers=1", "--steps", 3, "--batch", 4, "--seq-len", 16,
               "-o", tmp_path / "text.npz")
    assert r.exit_code == 0 and "unigram entropy" in r.output, r.output
    r = invoke("generate", tmp_path / "text.json", "--weights", tmp_path / "text.npz",
               "--prompt", "The ", "--length", 20, "--top-k", 5)
    assert r.exit_code == 0 and r.output.startswith("The ") and len(r.output) >= 24


def test_train_rejects_a_model_the_task_does_not_fit(tmp_path):
    r = invoke("train", "gpt", "--task", "reverse", "-o", tmp_path / "w.npz")
    assert r.exit_code == 1 and "no data for input(s) tokens" in r.output
    assert "the transformer model" in r.output
