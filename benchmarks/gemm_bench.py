"""tgraph's float32 GEMM (both cores, the BLAS blas.py picks) against JAX's jit and PyTorch
eager on the products of GPT config M and gpt2-small, interleaved round by round.

    python benchmarks/gemm_bench.py [--rounds 5]
    TGRAPH_BLAS=openblas python benchmarks/gemm_bench.py   # the BLAS another CPU gets

Prints GFLOP/s (the best of 20 runs a round, the median over rounds) and our rate over
each peer's.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

#: (rows, K, columns): gpt2-small's batch of one (the last: its tied head, read as x·Eᵀ),
#: then GPT config M's 1024 tokens
SHAPES = [(128, 768, 2304), (128, 768, 768), (128, 768, 3072), (128, 3072, 768),
          (128, 768, 50257), (1024, 256, 768), (1024, 256, 1024), (1024, 1024, 256),
          (256, 1024, 1024)]


def best_seconds(fn, runs: int = 20) -> float:
    fn()
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def sides(m: int, k: int, n: int) -> dict:
    import jax
    import torch

    from tgraph.codegen import gemm

    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = (rng.standard_normal((n, k)).astype(np.float32).T if n > 10_000  # a tied head
         else rng.standard_normal((k, n)).astype(np.float32))
    out = np.empty((m, n), np.float32)
    dot = jax.jit(lambda x, y: x @ y)
    ja, jb = jax.numpy.asarray(a), jax.numpy.asarray(b)
    ta, tb, tout = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(out)
    return {"tgraph": lambda: gemm.matmul(a, b, out),
            "jax": lambda: dot(ja, jb).block_until_ready(),
            "torch": lambda: torch.matmul(ta, tb, out=tout)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    import torch

    from tgraph.codegen import blas

    torch.set_num_threads(2)
    chosen = blas.bind()
    print(f"tgraph's float32 GEMM: {'onednn' if chosen.rows_sgemm else chosen.name}; "
          f"median over {args.rounds} rounds of the best of 20 runs")
    print(f"{'rows, K, columns':>22s} {'tgraph':>8s} {'jax':>8s} {'torch':>8s}  "
          "tgraph/jax tgraph/torch (rate)")
    for m, k, n in SHAPES:
        fns = sides(m, k, n)
        rates: dict[str, list[float]] = {name: [] for name in fns}
        for _ in range(args.rounds):
            for name, fn in fns.items():
                rates[name].append(2 * m * k * n / best_seconds(fn) / 1e9)
        med = {name: statistics.median(r) for name, r in rates.items()}
        print(f"{str((m, k, n)):>22s} " + " ".join(f"{med[s]:8.0f}" for s in fns)
              + f"  {med['tgraph'] / med['jax']:10.2f} {med['tgraph'] / med['torch']:12.2f}")


if __name__ == "__main__":
    main()
