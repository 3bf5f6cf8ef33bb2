"""The one timing rule every benchmark here uses: best of N runs after one warm-up."""

from __future__ import annotations

import time


def best_of(fn, repeats: int = 5, warmup: bool = True) -> float:
    """Seconds of the fastest of ``repeats`` calls of ``fn`` (after one untimed call)."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)
