"""Where a compiled GPT's forward or training step spends its time, op by op.

Each step of the executor is timed in place (``tgraph.execute._step`` wrapped: a run with
``observe`` would run without the memory plan's arena, allocating every result, and time
something else). Prints the run's median, the medians per op kind summed over its nodes,
and the slowest nodes; GEMM rows also give GFLOP/s.

    python benchmarks/op_profile.py [--config M|gpt2-small] [--what step|forward] [--runs 15]
"""

from __future__ import annotations

import argparse
import collections
import math
import statistics
import time

from compiler_bench import CONFIGS

import tgraph as tg
import tgraph.execute as execute
from tgraph.feeds import random_feeds
from tgraph.models import build_model
from tgraph.passes import optimize, training_graph
from tgraph.shapes import eval_shape


def profile(config: str, what: str, runs: int, warmup: int = 3):
    """(median run seconds, {step index: [seconds per run]}, the executable, its dims)."""
    cfg, b, t = CONFIGS[config]
    g = build_model("gpt", loss=True, **cfg)
    graph = training_graph(g, "loss", 2) if what == "step" else optimize(g, 2)[0]
    ex = tg.Executable(graph)
    params = tg.pack_params(graph, tg.init_params(g, 0))
    feeds = random_feeds(g, {"B": b, "T": t}, 0)
    times: dict[int, list[float]] = collections.defaultdict(list)
    index = {id(st): i for i, st in enumerate(ex.steps)}
    step = execute._step

    def timed(st, fn, buf, out):
        t0 = time.perf_counter()
        step(st, fn, buf, out)
        times[index[id(st)]].append(time.perf_counter() - t0)

    execute._step = timed
    try:
        for _ in range(warmup):
            ex.run_device(feeds, params)
        times.clear()
        totals = []
        for _ in range(runs):
            t0 = time.perf_counter()
            ex.run_device(feeds, params)
            totals.append(time.perf_counter() - t0)
    finally:
        execute._step = step
    return statistics.median(totals), times, ex, {"B": b, "T": t}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", choices=list(CONFIGS), default="M")
    parser.add_argument("--what", choices=["step", "forward"], default="step")
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    total, times, ex, env = profile(args.config, args.what, args.runs)
    median = {i: statistics.median(v) for i, v in times.items()}
    by_op: dict[str, list[float]] = collections.defaultdict(list)
    for i, s in median.items():
        by_op[ex.steps[i].node.op].append(s)
    print(f"{args.config} {args.what} at -O2: {total * 1e3:.1f} ms a run (median of "
          f"{args.runs}), {sum(median.values()) * 1e3:.1f} ms in its {len(median)} steps")
    for op, secs in sorted(by_op.items(), key=lambda kv: -sum(kv[1])):
        print(f"{sum(secs) * 1e3:9.2f} ms  {len(secs):4d}  {op}")
    print(f"slowest {args.top} nodes:")
    for i in sorted(median, key=median.get, reverse=True)[:args.top]:
        node = ex.steps[i].node
        rate = ""
        if node.op == "matmul":
            shapes = [eval_shape(v.shape, env) for v in (*node.inputs, node.output)]
            flops = 2 * math.prod(shapes[2]) * shapes[0][-1]
            rate = f"  {flops / median[i] / 1e9:.0f} GFLOP/s"
        print(f"{median[i] * 1e3:9.2f} ms  {node.op:<16} {node.name}{rate}")


if __name__ == "__main__":
    main()
