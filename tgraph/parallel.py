"""tgraph's kernel threads, and a helper that splits a range over them.

tgraph's CPU kernels (Numba loops with ``nogil``, the BLAS called from them) release the
GIL, so plain threads run them on every core. The caller works on the first part itself:
with two cores, one worker thread is enough.

A worker that has finished a part watches for the next one for ``SPIN`` seconds without
the GIL (a compiled loop reading a flag), and only then sleeps on a semaphore. A model
splits ~100 kernels a step, a few hundred microseconds apart, and two things went wrong
with workers that slept after each part:

- each part waited 35-100 µs for its thread to wake (measured after 1-5 ms idle);
- after an idle spell Linux woke the worker on the caller's own core, and with the
  worker asleep most of the time neither thread looked busy enough to be moved: both
  shared one core for the next tens of milliseconds (a [1024, 256] by [256, 256] GEMM
  took 1.4 ms so, 0.76 ms on two cores). A spinning worker is busy, so the scheduler
  keeps it on a core of its own.
"""

from __future__ import annotations

import functools
import os
import platform
import threading
import time
from collections.abc import Callable

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

#: below this many elements of work a job runs on the calling thread only
PARALLEL_MIN = 1 << 15
#: seconds a worker (and a caller waiting for one) watches its flag before sleeping
SPIN = 2e-3

_POSTED, _DONE = 0, 8  # flag slots, a cache line apart


def cores() -> int:
    """Threads a job splits over: NUMBA_NUM_THREADS if set, else the usable cores."""
    env = os.environ.get("NUMBA_NUM_THREADS")
    return max(1, int(env)) if env and env.isdigit() else len(os.sched_getaffinity(0))


@intrinsic
def _load_acquire(typingctx, flags, i):
    """flags[i] read as an atomic load, so the loop below sees another thread's store."""
    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, signature.args[0], array, [args[1]])
        return builder.load_atomic(ptr, "acquire", 8)

    return types.int64(flags, i), codegen


_X86 = platform.machine().lower() in ("x86_64", "amd64", "i686")


@intrinsic
def _pause(typingctx):
    """x86's spin-wait hint (``pause``): the loop yields the core's pipeline meanwhile."""
    def codegen(context, builder, signature, args):
        if _X86:
            pause = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.x86.sse2.pause")
            builder.call(pause, [])
        return context.get_dummy_value()

    return types.void(), codegen


_sched_yield = types.ExternalFunction("sched_yield", types.intc())


@njit(nogil=True, cache=True)
def _watch(flags, i, old, rounds):
    """Whether flags[i] moved off ``old`` within ``rounds`` reads; runs without the GIL.
    Every 64th read yields the core: when Linux has put both threads on one core, the one
    being waited for then runs."""
    for r in range(rounds):
        if _load_acquire(flags, i) != old:
            return True
        if r % 64 == 63:
            _sched_yield()
        else:
            _pause()
    return False


@functools.cache
def _rounds_per_second() -> float:
    flags = np.zeros(1, np.int64)
    _watch(flags, 0, 0, 10)  # compiled or loaded from the cache first
    t0 = time.perf_counter()
    _watch(flags, 0, 0, 100_000)
    return 100_000 / max(time.perf_counter() - t0, 1e-6)


class _Worker:
    """One kernel thread: runs the part it is posted, then watches for the next."""

    def __init__(self, index: int):
        self.flags = np.zeros(16, np.int64)
        self.lock = threading.Lock()
        self.wake, self.finished = threading.Semaphore(0), threading.Semaphore(0)
        self.asleep = self.waited_on = False
        self.part: tuple | None = None
        self.error: BaseException | None = None
        self.rounds = max(1, int(SPIN * _rounds_per_second()))
        threading.Thread(target=self._loop, name=f"tgraph-kernel_{index}", daemon=True).start()

    def post(self, job: Callable, lo: int, hi: int) -> None:
        with self.lock:
            self.part = (job, lo, hi)
            self.flags[_POSTED] += 1
            if self.asleep:
                self.asleep = False
                self.wake.release()

    def join(self) -> None:
        """Wait for the part posted last; re-raise its error here."""
        posted = self.flags[_POSTED]
        if not _watch(self.flags, _DONE, posted - 1, self.rounds):
            with self.lock:
                self.waited_on = self.flags[_DONE] != posted
            if self.waited_on:
                self.finished.acquire()
        error, self.error = self.error, None
        if error is not None:
            raise error

    def _loop(self) -> None:
        seen = 0
        while True:
            if not _watch(self.flags, _POSTED, seen, self.rounds):
                with self.lock:  # the caller posts under this lock: no wake-up is lost
                    self.asleep = self.flags[_POSTED] == seen
                if self.asleep:
                    self.wake.acquire()
            seen = int(self.flags[_POSTED])
            job, lo, hi = self.part
            try:
                job(lo, hi)
            except BaseException as e:  # noqa: BLE001 (re-raised by the caller's join)
                self.error = e
            with self.lock:
                self.flags[_DONE] = seen
                if self.waited_on:
                    self.waited_on = False
                    self.finished.release()


@functools.cache
def _workers() -> tuple[_Worker, ...]:
    return tuple(_Worker(i) for i in range(max(cores() - 1, 1)))


# one split at a time uses the workers; a second caller (another thread, or a job that
# splits) runs its job on its own thread
_busy = threading.Lock()


def _after_fork() -> None:  # the child has none of the parent's threads
    global _busy
    _busy = threading.Lock()
    _workers.cache_clear()


os.register_at_fork(after_in_child=_after_fork)


def split(job: Callable[[int, int], object], n: int, work: int,
          min_work: int = PARALLEL_MIN) -> None:
    """``job(start, stop)`` over 0..n in one part per core (one part when ``work``, the
    elements touched or the kernel's own unit, is below ``min_work``)."""
    parts = min(cores() if work >= min_work else 1, max(n, 1))
    if parts == 1 or not _busy.acquire(blocking=False):
        job(0, n)
        return
    try:
        helpers = _workers()[:parts - 1]
        bounds = [n * i // (len(helpers) + 1) for i in range(len(helpers) + 2)]
        for w, lo, hi in zip(helpers, bounds[1:-1], bounds[2:]):
            w.post(job, lo, hi)
        try:
            job(bounds[0], bounds[1])
        finally:
            for w in helpers:
                w.join()
    finally:
        _busy.release()
