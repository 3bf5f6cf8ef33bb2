"""tgraph's kernel threads (tgraph/parallel.py): every index once, errors raised in the
caller, a worker woken after it has gone to sleep, no deadlock when splits nest or race;
compiled parts (run without the GIL) likewise, timed as Python parts are; a keyed job split
only once it has shown itself long enough; arrays' addresses as NumPy gives them."""

from __future__ import annotations

import multiprocessing
import threading
import time

import numpy as np
import pytest
from numba import carray, cfunc, types

from tgraph import parallel


@pytest.fixture(autouse=True)
def even_speeds(monkeypatch):
    """Each test starts with the worker as fast as the caller (even parts), whatever the
    kernels that ran before it in this process taught the pool."""
    monkeypatch.setattr(parallel._workers()[0], "speed", 1.0)


def covered(n: int, work: int = 1 << 20) -> list[tuple[int, int, str]]:
    parts = []
    parallel.split(lambda lo, hi: parts.append((lo, hi, threading.current_thread().name)),
                   n, work)
    return sorted(parts)


def test_every_index_once_over_the_cores(monkeypatch):
    monkeypatch.setenv("NUMBA_NUM_THREADS", "2")
    parts = covered(101)
    assert [p[:2] for p in parts] == [(0, 50), (50, 101)]
    assert {p[2] for p in parts} == {"MainThread", "tgraph-kernel_0"}
    assert [p[:2] for p in covered(101, work=10)] == [(0, 101)]  # small: the caller alone
    assert [p[:2] for p in covered(1)] == [(0, 1)]


def test_a_slower_thread_gets_a_smaller_part(monkeypatch):
    """A worker whose units take twice the caller's time is given a third of the range
    after a few splits, so both parts end together; the parts still cover it once."""
    monkeypatch.setenv("NUMBA_NUM_THREADS", "2")
    unit = 2e-5

    def job(lo, hi):  # sleep: the GIL is free, both parts run at once
        slow = threading.current_thread().name != "MainThread"
        time.sleep((hi - lo) * unit * (2 if slow else 1))

    for _ in range(25):
        parallel.split(job, 120, 1 << 20)
    (lo0, hi0, first), (lo1, hi1, _) = covered(120)
    assert (lo0, hi0, hi1) == (0, lo1, 120) and first == "MainThread"
    assert 28 <= hi1 - lo1 <= 50  # a third: 40
    # a part too short to time leaves the speed alone
    before = parallel._workers()[0].speed
    parallel.split(lambda lo, hi: None, 120, 1 << 20)
    assert parallel._workers()[0].speed == before


def test_a_keyed_job_is_timed_whole_then_split_only_if_long_enough(monkeypatch):
    """A keyed job's first ALONE_RUNS runs go whole on the caller; then one that took less
    than WORTH_SPLITTING stays whole, and a longer one is split over the cores."""
    monkeypatch.setenv("NUMBA_NUM_THREADS", "2")
    monkeypatch.setattr(parallel, "_alone", {})
    n, rounds = 64, parallel.ALONE_RUNS + 2

    def runs(seconds: float) -> list[list[tuple[int, int]]]:
        seen = []
        for _ in range(rounds):
            parts = []

            def job(lo, hi):  # sleep: the GIL is free, both parts run at once
                parts.append((lo, hi))
                if seconds:
                    time.sleep(seconds * (hi - lo) / n)

            parallel.split(job, n, 1 << 20, key=("job", seconds))
            seen.append(sorted(parts))
        return seen

    short = runs(0.0)
    assert short == [[(0, n)]] * rounds
    long = runs(parallel.WORTH_SPLITTING * 20)
    assert long[:parallel.ALONE_RUNS] == [[(0, n)]] * parallel.ALONE_RUNS
    assert all(len(p) == 2 and p[0][0] == 0 and p[0][1] == p[1][0] and p[1][1] == n
               for p in long[parallel.ALONE_RUNS:])
    assert set(parallel._alone) == {("job", 0.0), ("job", parallel.WORTH_SPLITTING * 20)}


def test_the_table_of_keyed_jobs_stays_bounded(monkeypatch):
    """A process that meets ever new shapes keeps at most ALONE_MAX verdicts."""
    monkeypatch.setattr(parallel, "_alone", {})
    monkeypatch.setattr(parallel, "ALONE_MAX", 3)
    for length in range(10):
        parallel.split(lambda lo, hi: None, 64, 1 << 20, key=("job", length))
        assert 1 <= len(parallel._alone) <= 3
    assert ("job", 9) in parallel._alone


def test_a_worker_that_went_to_sleep_is_woken(monkeypatch):
    monkeypatch.setenv("NUMBA_NUM_THREADS", "2")
    covered(10)
    time.sleep(5 * parallel.SPIN)  # past its watch: asleep on its semaphore
    assert len(covered(10)) == 2
    out = np.zeros(1000)
    for _ in range(200):  # back to back: posted while it watches
        parallel.split(lambda lo, hi: out.__setitem__(slice(lo, hi), out[lo:hi] + 1), 1000,
                       1 << 20)
    assert np.all(out == 200)


@cfunc(types.void(types.int64, types.int64, types.CPointer(types.int64)))
def _count_and_spin(lo, hi, argp):
    """args: [spins per index, n, a counter per index, a result per index]: each index of
    lo..hi counted once, after a busy loop as long as its share of the range."""
    head = carray(argp, (2,))
    args = carray(argp, (2 + 2 * head[1],))
    acc = 0
    for i in range(lo * head[0], hi * head[0]):
        acc = (acc * 31 + i) % 1000003
    for i in range(lo, hi):
        args[2 + i] += 1
        args[2 + head[1] + i] = acc  # kept: the loop is not optimised away


def _compiled_counter(n: int, spins: int) -> parallel.CompiledJob:
    return parallel.CompiledJob(_count_and_spin.address, np.array([spins, n] + [0] * 2 * n))


@cfunc(types.void(types.int64, types.int64, types.CPointer(types.int64)))
def _record_slot(lo, hi, argp):
    """args: [the job's slot counter, then each index's slot]: which part ran it."""
    args = carray(argp, (1 + hi,))
    slot = parallel.take_slot(args[:1])
    for i in range(lo, hi):
        args[1 + i] = slot


def test_each_part_of_a_split_takes_a_slot_of_its_own(monkeypatch):
    """take_slot gives a compiled job's parts 0, 1, ...: per-part buffers (attention's)
    are never shared by two threads."""
    monkeypatch.setenv("NUMBA_NUM_THREADS", "2")
    for _ in range(20):
        job = parallel.CompiledJob(_record_slot.address, np.r_[0, np.full(64, -1)])
        parallel.split(job, 64, 1 << 20)
        lo_part, hi_part = set(job.args[1:33]), set(job.args[33:])
        assert job.args[0] == 2 and {*lo_part, *hi_part} == {0, 1}
        assert len(lo_part) == len(hi_part) == 1
        job = parallel.CompiledJob(_record_slot.address, np.r_[0, np.full(64, -1)])
        parallel.split(job, 64, 1)  # too little work: one part
        assert job.args[0] == 1 and set(job.args[1:]) == {0}


def test_compiled_parts_cover_every_index_once_and_are_timed(monkeypatch):
    """A CompiledJob's parts: the worker runs one from its watch loop (also after it went to
    sleep, and back to back), every index once; its time, read from the cycle counter, is
    in seconds like the caller's (the two parts of an even split take about as long)."""
    monkeypatch.setenv("NUMBA_NUM_THREADS", "2")
    job = _compiled_counter(200, 20_000)
    parallel.split(job, 200, 1 << 20)
    assert np.all(job.args[2:202] == 1)
    worker = parallel._workers()[0]
    assert worker.flags[parallel._JOB] == job.address  # posted as compiled, run there
    if parallel._ticks_per_second() > 0:
        alone = _compiled_counter(100, 20_000)
        t0 = time.perf_counter()
        alone(0, 100)  # as long as one half, on the caller alone
        seconds = time.perf_counter() - t0
        assert 0.1 * seconds < worker.elapsed < 10 * seconds  # seconds, not ticks or ms
    time.sleep(5 * parallel.SPIN)  # asleep on its semaphore
    for _ in range(50):
        parallel.split(job, 200, 1 << 20)
    assert np.all(job.args[2:202] == 51)
    assert len(covered(10)) == 2  # a Python part after compiled ones


def test_an_error_in_a_workers_part_is_raised_by_the_caller(monkeypatch):
    monkeypatch.setenv("NUMBA_NUM_THREADS", "2")

    def job(lo, hi):
        if lo > 0:
            raise ValueError(f"part {lo}:{hi}")

    with pytest.raises(ValueError, match="part 5:10"):
        parallel.split(job, 10, 1 << 20)
    assert len(covered(10)) == 2  # and the pool works after it


def test_nested_and_concurrent_splits_finish(monkeypatch):
    monkeypatch.setenv("NUMBA_NUM_THREADS", "2")
    inner = []

    def outer(lo, hi):  # a job that splits: its inner split runs on its own thread
        parallel.split(lambda a, b: inner.append((a, b)), 4, 1 << 20)

    parallel.split(outer, 2, 1 << 20)
    assert sorted(inner) == [(0, 4), (0, 4)]
    totals = []

    def caller():
        out = np.zeros(500)
        for _ in range(50):
            parallel.split(lambda lo, hi: out.__setitem__(slice(lo, hi), out[lo:hi] + 1),
                           500, 1 << 20)
        totals.append(out.sum())

    threads = [threading.Thread(target=caller) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert totals == [25000.0] * 3


def _child(queue):
    parts = []
    parallel.split(lambda lo, hi: parts.append((lo, hi)), 8, 1 << 20)
    queue.put(sorted(parts))


def test_a_forked_child_starts_its_own_workers(monkeypatch):
    monkeypatch.setenv("NUMBA_NUM_THREADS", "2")
    covered(8)  # the parent's worker exists
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child, args=(queue,))
    child.start()
    assert queue.get(timeout=60) == [(0, 4), (4, 8)]
    child.join(timeout=60)
    assert child.exitcode == 0


def test_data_address_is_where_numpy_says_the_data_starts():
    base = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    frozen = base.copy()
    frozen.flags.writeable = False
    arrays = [base, base[1:], base[:, 2:, 1:], base.T, base[::-1], frozen, np.float64(2.0) * base,
              np.empty((0, 4)), np.array(7, np.int64), np.broadcast_to(base[0, 0], (6, 5))]
    for a in arrays:
        assert parallel.data_address(a) == a.ctypes.data
