"""Training: optimizers and clipping vs torch.optim, the loop vs a least-squares closed form,
checkpoints, tasks, sampling, and short real training runs (the ≥99 % reverse run lives in
examples/train_reverse.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import tgraph as tg
from tgraph import builder as tb
from tgraph.models import build_model
from tgraph.train import SGD, AdamW, Trainer, clip_grad_norm, warmup_cosine
from tgraph.train.sample import pick
from tgraph.train.tasks import CharVocab, SequenceTask, TextTask

rng = np.random.default_rng(0)


def run_both(ours, theirs, steps=5):
    """Same parameters and gradient sequence through our optimizer and torch's."""
    p0 = {"w": rng.standard_normal((3, 4)), "b": rng.standard_normal(4)}
    params = {k: a.copy() for k, a in p0.items()}
    tp = {k: torch.tensor(a, requires_grad=True) for k, a in p0.items()}
    opt = theirs(list(tp.values()))
    for _ in range(steps):
        grads = {k: rng.standard_normal(a.shape) for k, a in p0.items()}
        ours.step(params, grads)
        for k, t in tp.items():
            t.grad = torch.tensor(grads[k])
        opt.step()
    for k, t in tp.items():
        np.testing.assert_allclose(params[k], t.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_sgd_with_momentum_matches_torch():
    run_both(SGD(0.1, momentum=0.9), lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9))


def test_adamw_matches_torch_with_decay_on_matrices_only():
    ours = AdamW(1e-2, betas=(0.8, 0.99), weight_decay=0.1)
    run_both(ours, lambda ps: torch.optim.AdamW(
        [{"params": ps[:1], "weight_decay": 0.1}, {"params": ps[1:], "weight_decay": 0.0}],
        lr=1e-2, betas=(0.8, 0.99)))


def test_clip_grad_norm_matches_torch():
    grads = {"a": rng.standard_normal((3, 3)), "b": rng.standard_normal(5)}
    ts = [torch.tensor(g) for g in grads.values()]
    for t in ts:
        t.grad = t.clone()
    norm = clip_grad_norm(grads, 1.0)
    ref = torch.nn.utils.clip_grad_norm_(ts, 1.0)
    assert math.isclose(norm, ref.item(), rel_tol=1e-12)
    for g, t in zip(grads.values(), ts):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-6)


def test_warmup_then_cosine():
    at = warmup_cosine(1.0, steps=110, warmup=10, floor=0.1)
    assert at(0) == pytest.approx(0.1) and at(9) == pytest.approx(1.0)
    assert at(60) == pytest.approx(0.55) and at(110) == pytest.approx(0.1)


def least_squares_graph():
    g = tg.Graph("lsq")
    x, y = g.input("x", ("N", 3), "float64"), g.input("y", ("N",), "float64")
    pred = tb.sum(x * g.param("w", (3,), "float64"), -1) + g.param("b", (), "float64")
    err = pred - y
    g.set_output("loss", tb.mean(err * err))
    return g


def test_trainer_reaches_the_least_squares_solution_and_checkpoints(tmp_path, capsys):
    x = rng.standard_normal((64, 3))
    y = x @ np.array([1.5, -2.0, 0.5]) + 0.3 + 0.01 * rng.standard_normal(64)
    g = least_squares_graph()
    trainer = Trainer(g, {"w": np.zeros(3), "b": np.zeros(())}, SGD(0.2), clip=0)
    losses = trainer.fit(lambda step: {"x": x, "y": y}, 300, checkpoint=tmp_path / "w.npz",
                         every=100)
    solution, *_ = np.linalg.lstsq(np.c_[x, np.ones(64)], y, rcond=None)
    saved = tg.load_weights(tmp_path / "w.npz", g)
    np.testing.assert_allclose(np.r_[saved["w"], saved["b"]], solution, rtol=1e-6)
    assert losses[-1] < losses[0] / 100
    assert capsys.readouterr().err == ""  # not a terminal: no progress bar


def test_reverse_task_batches_and_a_short_run_learns():
    task = SequenceTask("reverse", length=5)
    b = task.batch(np.random.default_rng(0), 4)
    np.testing.assert_array_equal(b["targets"], b["src_tokens"][:, ::-1])
    np.testing.assert_array_equal(b["tgt_tokens"][:, 0], task.bos)
    np.testing.assert_array_equal(b["tgt_tokens"][:, 1:], b["targets"][:, :-1])

    g = build_model("transformer", preset="tiny", loss=True, heads="batched",
                    **task.model_overrides())
    trainer = Trainer(g, tg.init_params(g, 0), AdamW(3e-3, weight_decay=0.0))
    r = np.random.default_rng(1)
    losses = trainer.fit(lambda step: task.batch(r, 32), 60)
    assert np.mean(losses[-5:]) < 0.6 * math.log(task.vocab)


def test_text_task_and_a_short_gpt_run(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("abab abba " * 40)
    task = TextTask(path, seq_len=8)
    assert task.codec.chars == " ab"
    p = np.array([80, 160, 160]) / 400  # closed form of the character entropy
    assert task.unigram_entropy() == pytest.approx(-(p * np.log(p)).sum())
    b = task.batch(np.random.default_rng(0), 3)
    np.testing.assert_array_equal(b["tokens"][:, 1:], b["targets"][:, :-1])

    g = build_model("gpt", preset="tiny", loss=True, n_layers=1, heads="batched",
                    **task.model_overrides())
    trainer = Trainer(g, tg.init_params(g, 0), AdamW(1e-2, weight_decay=0.0))
    r = np.random.default_rng(2)
    losses = trainer.fit(lambda step: task.batch(r, 16), 40)
    assert np.mean(losses[-5:]) < 0.7 * task.unigram_entropy()  # uses the context


def test_char_vocab_round_trip_and_unknown_characters():
    v = CharVocab(" abc")
    assert v.decode(v.encode("cab a")) == "cab a"
    with pytest.raises(tg.TGraphError, match="'z'"):
        v.encode("az")


def test_sampling_temperature_and_top_k():
    logits = np.array([0.0, 3.0, 1.0, 2.9])
    assert pick(logits, 0, 0, None) == 1
    r = np.random.default_rng(0)
    draws = [pick(logits, 1.0, 2, r) for _ in range(300)]
    assert set(draws) == {1, 3}  # only the two likeliest
    hot = [pick(logits, 100.0, 0, r) for _ in range(400)]
    assert len(set(hot)) == 4  # a high temperature flattens the distribution
