"""Data-parallel training over a jax.sharding.Mesh, on 4 CPU devices emulated by XLA.

XLA fixes the device count when JAX starts, so each check runs in a fresh interpreter with
XLA_FLAGS=--xla_force_host_platform_device_count=4.

Tolerances: on 4 devices each gradient is summed per shard and then across shards, a
different order from 1 device's; float32 reordering moves a sum of n terms by at most
γ_n·Σ|terms| (n = 96 tokens here: 5.7e-6 relative), so a few SGD steps give the same
parameters to rtol 1e-5, measured on what the steps changed. Element by element is not a
measure: a key bias's gradient is zero in exact arithmetic (softmax ignores a shift), so its
entries are rounding on both sides.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("jax")

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
       "JAX_PLATFORMS": "cpu"}

SCRIPT = textwrap.dedent("""
    import json
    import jax
    import numpy as np
    import tgraph as tg
    from tgraph.models import build_model
    from tgraph.runtime import trainer
    from tgraph.train import SGD

    def train(graph, devices, backend="jax", steps=4, clip=1.0):
        rng = np.random.default_rng(0)
        t = trainer(graph, tg.init_params(graph, 0), SGD(0.1, momentum=0.9), backend, clip,
                    devices)
        tokens = rng.integers(0, 16, (8, 13))  # one batch, learnt by heart: the loss falls
        losses = [t.step({"tokens": tokens[:, :-1], "targets": tokens[:, 1:]})
                  for _ in range(steps)]
        return t.host_params(), losses

    def change_ratio(a, b, start):
        # ||a - b|| over ||a - start||, all parameters as one vector, in float64
        diff = sum(float(np.sum((a[k].astype(float) - b[k]) ** 2)) for k in a)
        moved = sum(float(np.sum((a[k].astype(float) - start[k]) ** 2)) for k in a)
        return (diff / moved) ** 0.5

    out = {"devices": len(jax.devices())}
    g = build_model("gpt", preset="tiny", loss=True, vocab=16, max_len=16, n_layers=1,
                    heads="batched")
    start = tg.init_params(g, 0)
    one, losses_one = train(g, 1)
    four, losses_four = train(g, 4)
    out["f32_1_vs_4"] = change_ratio(one, four, start)
    out["f32_vs_start"] = change_ratio(one, start, {k: 0 * a for k, a in start.items()})
    out["losses"] = [losses_one, losses_four]
    # float64, gradient clipping on: JAX's grad and jitted update on 4 devices against
    # tgraph's own grad() and optimizer on NumPy
    jax.config.update("jax_enable_x64", True)
    g64 = build_model("gpt", preset="tiny", loss=True, vocab=16, max_len=16, n_layers=1,
                      heads="batched", dtype="float64")
    start64 = tg.init_params(g64, 0)
    four64, _ = train(g64, 4, clip=0.5)
    numpy64, _ = train(g64, None, backend="numpy", clip=0.5)
    out["f64_jax4_vs_numpy"] = change_ratio(numpy64, four64, start64)
    print(json.dumps(out))
""")


def run(args, **kw):
    return subprocess.run(args, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600,
                          **kw)


def test_one_and_four_devices_give_the_same_parameters_and_match_numpy():
    r = run([sys.executable, "-c", SCRIPT])
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["devices"] == 4
    assert 1e-3 < out["f32_vs_start"]            # the steps moved the weights
    assert out["f32_1_vs_4"] < 1e-5              # float32 rtol 1e-5 on what they moved
    assert out["f64_jax4_vs_numpy"] < 1e-10      # two autodiffs, one optimizer formula
    for losses in out["losses"]:
        assert losses[-1] < losses[0]
    assert abs(out["losses"][0][0] - out["losses"][1][0]) < 1e-5 * out["losses"][0][0]


def test_cli_train_on_four_devices(tmp_path):
    weights = tmp_path / "w.npz"
    base = [sys.executable, "-m", "tgraph", "train", "gpt", "--task", "text", "--data",
            "examples/data/corpus.txt", "--preset", "tiny", "--set", "n_layers=1", "--set", "heads=batched",
            "--seq-len", "16", "--steps", "12", "--warmup", "2", "--backend", "jax"]
    r = run([*base, "--devices", "4", "--batch", "8", "-o", str(weights)])
    assert r.returncode == 0, r.stderr[-3000:]
    first, last = (float(x) for x in r.stdout.split("loss ")[1].split(" (")[0].split(" -> "))
    assert last < first
    assert weights.exists() and weights.with_suffix(".json").exists()
    bad = run([*base, "--devices", "4", "--batch", "6", "-o", str(tmp_path / "bad.npz")])
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [
        "error: feed 'tokens': a batch of 6 does not split evenly over 4 devices; make the "
        "batch a multiple of 4"]
    assert not (tmp_path / "bad.npz").exists()
