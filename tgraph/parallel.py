"""One pool of worker threads per process, and a helper that splits a range over it.

tgraph's CPU kernels (Numba loops with ``nogil``, NumPy's matmul) release the GIL, so plain
threads run them on every core. The caller works on the first part itself: with two cores,
one worker thread is enough and a small job never waits for a thread to wake.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

#: below this many elements of work a job runs on the calling thread only
PARALLEL_MIN = 1 << 15


def cores() -> int:
    """Threads a job splits over: NUMBA_NUM_THREADS if set, else the usable cores."""
    env = os.environ.get("NUMBA_NUM_THREADS")
    return max(1, int(env)) if env and env.isdigit() else len(os.sched_getaffinity(0))


@functools.cache
def pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max(cores() - 1, 1), thread_name_prefix="tgraph-kernel")


def split(job: Callable[[int, int], object], n: int, work: int,
          min_work: int = PARALLEL_MIN) -> None:
    """``job(start, stop)`` over 0..n in one part per core (one part when ``work``, the
    elements touched or the kernel's own unit, is below ``min_work``)."""
    parts = min(cores() if work >= min_work else 1, max(n, 1))
    bounds = [n * i // parts for i in range(parts + 1)]
    futures = [pool().submit(job, a, b) for a, b in zip(bounds[1:-1], bounds[2:])]
    job(bounds[0], bounds[1])
    for f in futures:
        f.result()
