"""--backend jax beside NumPy, in one process: GPT forward and a whole training step
(forward, backward, clipping, AdamW) through exactly what the CLI runs (tgraph.runtime's
executable and trainer), and the one-off XLA compile time. Prints ratios NumPy / JAX.

    python benchmarks/jax_bench.py            # GPT config M (as train_step_bench.py)
    python benchmarks/jax_bench.py tiny       # the tiny preset, batch 8 x 32
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
from timing import best_of  # benchmarks/timing.py, beside this script

import tgraph as tg
from tgraph.models import build_model
from tgraph.runtime import executable, trainer
from tgraph.train import AdamW

CONFIGS = {
    "M": (dict(n_layers=4, d_model=256, n_heads=8, d_ff=1024, vocab=1024, max_len=128), 8, 128),
    "tiny": (dict(preset="tiny"), 8, 32),
}
STEPS = 5


def main() -> None:
    import jax

    name = sys.argv[1] if len(sys.argv) > 1 else "M"
    cfg, b, t = CONFIGS[name]
    g = build_model("gpt", loss=True, heads="batched", **cfg)
    r = np.random.default_rng(0)
    vocab = g.meta["config"]["vocab"]
    feeds = {"tokens": r.integers(0, vocab, (b, t)), "targets": r.integers(0, vocab, (b, t))}
    params = tg.init_params(g, 0)
    print(f"GPT {name} ({len(g.nodes)} nodes), batch {b} x {t}; numpy {np.__version__}, "
          f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}; best of {STEPS}")
    rows = []
    for label, make in (
        ("forward", lambda be: (lambda ex: lambda: ex.run(feeds, params))(executable(g, be))),
        ("train step", lambda be: (lambda tr: lambda: tr.step(feeds))(
            trainer(g, params, AdamW(1e-3), be))),
    ):
        times = {}
        for be in ("numpy", "jax"):
            fn = make(be)
            t0 = time.perf_counter()
            fn()  # the first call: for jax, the trace and XLA's compile
            first = time.perf_counter() - t0
            times[be] = best_of(fn, STEPS, warmup=False)
            print(f"{label:<11} {be:<6} {times[be] * 1e3:8.1f} ms   (first call {first:.2f} s)")
        rows.append((label, times["numpy"] / times["jax"]))
    for label, ratio in rows:
        print(f"{label}: numpy / jax = {ratio:.2f}")


if __name__ == "__main__":
    main()
