"""The compiled graph against PyTorch eager on CPU, in one process, rounds interleaved.

GPT config M (layers 4, d_model 256, heads 8, d_ff 1024, seq 128, batch 8, vocab 1024,
pre-LN, exact GELU) and the gpt2-small preset (batch 1, seq 128, tanh GELU): forward and
forward+backward step, tgraph at -O0/-O1/-O2 and torch eager; each round runs every side
in turn (after a pause, one untimed run, then RUNS timed runs back to back, their median the
round's time), so a noisy neighbour hits every side alike. A ratio is reported as the ratio
of the medians over rounds, with the range of the rounds' own ratios: the noise any one
figure carries. Also: the machine's float32 GEMM rate (one 2048² matmul, NumPy's BLAS,
timed as one more side of the rounds) and the step's share of it, the split-heads diagram
graph at -O2 against the batched build, and the -O2 pipeline time (passes + kernel
compilation) with a cold and a warm kernel cache, each in a fresh process.

    python benchmarks/compiler_bench.py [--config M|gpt2-small|all] [--rounds 7] [--jax]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import tgraph as tg
from tgraph.feeds import random_feeds
from tgraph.models import build_model
from tgraph.params import pack_params
from tgraph.passes import optimize, training_graph

CONFIGS = {
    "M": (dict(n_layers=4, d_model=256, n_heads=8, d_ff=1024, vocab=1024, max_len=128,
               norm="pre", pos="learned", activation="gelu", tie_embeddings=True), 8, 128),
    "gpt2-small": (dict(n_layers=12, d_model=768, n_heads=12, d_ff=3072, vocab=50257,
                        max_len=1024, norm="pre", pos="learned", activation="gelu_tanh",
                        tie_embeddings=True), 1, 128),
}


def tgraph_sides(cfg, b, t, heads="batched"):
    g = build_model("gpt", loss=True, heads=heads, **cfg)
    params, feeds = tg.init_params(g, 0), random_feeds(g, {"B": b, "T": t}, 0)
    sides = {}
    for level in (0, 1, 2):
        fwd = tg.Executable(optimize(g, level)[0])
        step = tg.Executable(training_graph(g, "loss", level))
        sides[f"tgraph -O{level} forward"] = lambda ex=fwd, p=pack_params(fwd.graph, params): \
            ex.run_device(feeds, p)
        sides[f"tgraph -O{level} step"] = lambda ex=step, p=pack_params(step.graph, params): \
            ex.run_device(feeds, p)
    return sides, g


def torch_sides(cfg, b, t):
    import torch
    from torch_gpt import GPT

    model = GPT(cfg["n_layers"], cfg["d_model"], cfg["n_heads"], cfg["d_ff"], cfg["vocab"],
                cfg["max_len"], gelu="tanh" if cfg["activation"] == "gelu_tanh" else "none")
    r = np.random.default_rng(0)
    tokens = torch.from_numpy(r.integers(0, cfg["vocab"], (b, t)))
    targets = torch.from_numpy(r.integers(0, cfg["vocab"], (b, t)))

    def forward():
        with torch.no_grad():
            model(tokens, targets)

    def step():
        model.zero_grad(set_to_none=True)
        model(tokens, targets).backward()

    return {"torch eager forward": forward, "torch eager step": step}


#: seconds between two sides: torch's OpenMP workers, OpenBLAS's and XLA's threads spin on a
#: core for a while after their last job, and a side timed right after another runs beside
#: them (GPT config M: torch's forward 152 ms so, 53-76 ms after a pause)
PAUSE = 0.3
#: then each side runs once untimed and RUNS times timed, back to back, as steps of a
#: training loop do: a side's first runs after another library's are slower than its
#: steady state (tgraph's M forward: 90+ ms right after a 0.3 s pause, 75-79 ms on the
#: second run, 61-69 ms from the third on), and that warming is not what a loop sees
RUNS = 3


def interleaved(sides: dict, rounds: int, pause: float = PAUSE) -> dict[str, list[float]]:
    """Each side's time in each round: the median of its RUNS runs there."""
    for fn in sides.values():  # warm-up: kernels compiled, pages touched
        fn()
    times: dict[str, list[float]] = {k: [] for k in sides}
    for _ in range(rounds):
        for k, fn in sides.items():
            time.sleep(pause)
            fn()
            runs = []
            for _ in range(RUNS):
                t0 = time.perf_counter()
                fn()
                runs.append(time.perf_counter() - t0)
            times[k].append(statistics.median(runs))
    return times


def ratio(ours: list[float], peer: list[float]) -> str:
    """The ratio of the medians, and the range of the rounds' own ratios (the two sides ran
    side by side in each round, so a round's ratio is free of the host's drift between
    rounds; its spread is the noise a single ratio carries)."""
    each = sorted(a / b for a, b in zip(ours, peer))
    return (f"{statistics.median(ours) / statistics.median(peer):.2f} "
            f"(rounds {each[0]:.2f}-{each[-1]:.2f})")


#: the size of the GEMM that measures the machine's float32 rate
GEMM_N = 2048


def gemm_side() -> dict:
    """One float32 GEMM_N² product through NumPy's BLAS, timed as one more side of the
    rounds: the rate a step is compared with is the host's at the same moments (a rate
    measured once at the start read 107 GFLOP/s in a slow minute, 180-206 otherwise)."""
    a = np.random.default_rng(0).standard_normal((GEMM_N, GEMM_N), dtype=np.float32)
    return {f"float32 GEMM {GEMM_N}²": lambda: a @ a}


PIPELINE = """
import time
import tgraph as tg
from tgraph.models import build_model
from tgraph.passes import training_graph
g = build_model("gpt", loss=True, preset="gpt2-small")
t1 = time.perf_counter()
forward_backward = training_graph(g, "loss", 2)
t2 = time.perf_counter()
tg.Executable(forward_backward)  # compiles (or loads) every kernel it will run
t3 = time.perf_counter()
print(f"{t2 - t1:.2f} {t3 - t2:.2f}")
"""


MEMORY = """
import sys
sys.path.insert(0, {bench!r})
from compiler_bench import CONFIGS, tgraph_step, torch_sides
cfg, b, t = CONFIGS[{config!r}]
make = ((lambda b, t: tgraph_step(cfg, b, t)) if {side!r} == "tgraph" else
        (lambda b, t: torch_sides(cfg, b, t)["torch eager step"]))
small, step = make(1, 8), make(b, t)
small()  # kernels compiled or loaded, libraries initialised, on a tiny batch
def resident(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the peak resident size starts again from here
before = resident("VmRSS")
step()
print(resident("VmHWM") - before)
"""


def tgraph_step(cfg, b, t):
    g = build_model("gpt", loss=True, **cfg)
    params, feeds = tg.init_params(g, 0), random_feeds(g, {"B": b, "T": t}, 0)
    ex = tg.Executable(training_graph(g, "loss", 2))
    params = pack_params(ex.graph, params)
    return lambda: ex.run_device(feeds, params)


def step_memory_mb(config: str) -> dict[str, float]:
    """MB the resident set grows by during a first full-size training step (after one on a
    tiny batch has loaded kernels), each side in a fresh process: tgraph -O2, torch eager."""
    out = {}
    for side in ("tgraph", "torch"):
        code = MEMORY.format(bench=os.path.dirname(os.path.abspath(__file__)), config=config,
                             side=side)
        res = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                             text=True)
        out[side] = float(res.stdout.split()[-1])
    return out


def pipeline_seconds() -> list[tuple[float, float]]:
    """(passes, kernels) seconds of the -O2 gpt2-small forward+backward in a fresh process
    each: as first run after installing (Numba's cache of tgraph's own compiled runtime,
    its threads' loops and GEMM parts, empty too), with tgraph's kernel cache cold, warm."""
    with tempfile.TemporaryDirectory() as runtime, tempfile.TemporaryDirectory() as first, \
            tempfile.TemporaryDirectory() as kernels:
        out = []
        for cache in (first, kernels, kernels):
            env = {**os.environ, "NUMBA_CACHE_DIR": runtime, "TGRAPH_CACHE_DIR": cache}
            res = subprocess.run([sys.executable, "-c", PIPELINE], env=env, check=True,
                                 capture_output=True, text=True)
            out.append(tuple(map(float, res.stdout.split())))
        return out


def pipeline_line(runs: int) -> str:
    """The pipeline's times over ``runs`` fresh caches: medians, and each run's totals. One
    run is one sample of a host whose speed moves by a third over minutes."""
    times = [pipeline_seconds() for _ in range(runs)]
    (cold_p, cold_k), (warm_p, warm_k) = (
        [statistics.median(t[case][i] for t in times) for i in (0, 1)] for case in (1, 2))
    first = statistics.median(sum(t[0]) for t in times)
    each = ", ".join("/".join(f"{sum(case):.2f}" for case in t) for t in times)
    return (f"-O2 pipeline, gpt2-small forward+backward, median of {runs}: passes {cold_p:.2f} s"
            f" + kernels {cold_k:.2f} s cold cache; passes {warm_p:.2f} s + kernels "
            f"{warm_k:.2f} s warm; {first:.2f} s in all as first run after installing "
            f"(totals first/cold/warm: {each})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", choices=[*CONFIGS, "all"], default="M")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--no-pipeline", action="store_true")
    parser.add_argument("--pipeline-runs", type=int, default=3,
                        help="pipeline samples (first run after installing, cold, warm), each on "
                        "fresh caches")
    parser.add_argument("--pause", type=float, default=PAUSE,
                        help="seconds of idle machine before each side's untimed and timed run "
                        "(default %(default)s)")
    parser.add_argument("--jax", action="store_true",
                        help="JAX jit as a second peer (pip install jax; not a dependency)")
    args = parser.parse_args()
    import numba
    import torch

    print(f"numpy {np.__version__}, numba {numba.__version__}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}; median of {args.rounds} interleaved rounds, "
          f"{args.pause} s idle and one untimed run before each side's {RUNS} timed runs")
    for name in (CONFIGS if args.config == "all" else [args.config]):
        cfg, b, t = CONFIGS[name]
        sides, g = tgraph_sides(cfg, b, t)
        sides.update(torch_sides(cfg, b, t))
        sides.update(gemm_side())
        if args.jax:
            from jax_gpt import jax_sides

            sides.update(jax_sides(cfg, b, t))
        times = interleaved(sides, args.rounds, args.pause)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"== {name} (B={b}, T={t})")
        for kind in ("forward", "step"):
            peer = times[f"torch eager {kind}"]
            print(f"torch eager {kind:<8} {med[f'torch eager {kind}'] * 1e3:9.1f} ms")
            if args.jax:
                jx = times[f"jax jit {kind}"]
                print(f"jax jit {kind:<12} {med[f'jax jit {kind}'] * 1e3:9.1f} ms   "
                      f"ratio {ratio(jx, peer)}")
            for level in (0, 1, 2):
                ours = times[f"tgraph -O{level} {kind}"]
                vs_jax = f", {ratio(ours, times[f'jax jit {kind}'])} x jax" if args.jax else ""
                print(f"tgraph -O{level} {kind:<8} {med[f'tgraph -O{level} {kind}'] * 1e3:9.1f} "
                      f"ms   ratio {ratio(ours, peer)}{vs_jax}")
        peak = 2 * GEMM_N**3 / med[f"float32 GEMM {GEMM_N}²"] / 1e9
        flops = 3 * tg.execute.graph_flops(optimize(g, 1)[0], {"B": b, "T": t})
        step = med["tgraph -O2 step"]
        print(f"float32 GEMM {GEMM_N}² (NumPy's BLAS, in the rounds): {peak:.1f} GFLOP/s; "
              f"-O2 step: {flops / step / 1e9:.1f} GFLOP/s (3x forward FLOPs), "
              f"{flops / step / 1e9 / peak:.0%} of it")
        mem = step_memory_mb(name)
        print(f"training step memory (resident set growth): tgraph -O2 {mem['tgraph']:.0f} MB, "
              f"torch {mem['torch']:.0f} MB, ratio {mem['tgraph'] / mem['torch']:.2f}")
        if name == "M":
            split, _ = tgraph_sides(cfg, b, t, heads="split")
            pair = {"split -O2": split["tgraph -O2 forward"],
                    "batched -O2": sides["tgraph -O2 forward"]}
            # the graphs differ per layer: the split build's one merged product (its weights'
            # concat a view, packed) against the batched build's three: three times the
            # rounds, since a host's run-to-run noise (±5 % here) is the size of the 5 % target
            m = interleaved(pair, 3 * args.rounds, args.pause)
            print(f"split-heads graph at -O2 / batched build at -O2 (forward, "
                  f"{3 * args.rounds} rounds): {ratio(m['split -O2'], m['batched -O2'])}")
    if not args.no_pipeline:
        print(pipeline_line(args.pipeline_runs))


if __name__ == "__main__":
    main()
