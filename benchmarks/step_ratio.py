"""The -O2 training step against PyTorch eager's, run by run: deciles of each side's times
and of the round ratios, and the ratio of the fastest runs.

compiler_bench.py takes the median of three runs a round and the median over rounds; on a
host whose speed moves by 10-20 % over minutes that median still moves with the minute.
Single runs alternating (which side goes first alternating too) over many rounds show the
spread itself, and the fastest runs, which the host's slow moments touch least.

    python benchmarks/step_ratio.py [--config M|gpt2-small] [--rounds 40]
"""

from __future__ import annotations

import argparse
import statistics
import time

from compiler_bench import CONFIGS, tgraph_step, torch_sides


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", choices=list(CONFIGS), default="M")
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    cfg, b, t = CONFIGS[args.config]
    ours, theirs = tgraph_step(cfg, b, t), torch_sides(cfg, b, t)["torch eager step"]
    for _ in range(3):  # kernels compiled, pages touched, both thread pools started
        ours()
        theirs()
    times: dict[str, list[float]] = {"tgraph -O2": [], "torch eager": []}
    for r in range(args.rounds):
        sides = [("tgraph -O2", ours), ("torch eager", theirs)]
        for name, fn in sides if r % 2 else sides[::-1]:
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1e3)
    for name, ms in times.items():
        print(f"{name:12s} ms, deciles: " + " ".join(f"{x:.1f}" for x in
                                                   statistics.quantiles(ms, n=10)))
    ratios = [a / b for a, b in zip(times["tgraph -O2"], times["torch eager"])]
    print("round ratios, deciles: " + " ".join(f"{x:.3f}" for x in
                                             statistics.quantiles(ratios, n=10)))
    print(f"median of round ratios {statistics.median(ratios):.3f}; ratio of medians "
          f"{statistics.median(times['tgraph -O2']) / statistics.median(times['torch eager']):.3f}; "
          f"ratio of the fastest runs {min(times['tgraph -O2']) / min(times['torch eager']):.3f}")


if __name__ == "__main__":
    main()
