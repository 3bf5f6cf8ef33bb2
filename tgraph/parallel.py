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

A worker says its part is done from compiled code, after it has let go of the GIL: a
caller that sees the flag then takes the GIL at once. Said from Python, under the GIL, the
caller waited for the worker to drop it and for Linux to wake it: 60-100 µs a split on a
2-core Xeon VM, now ~15 µs.

A part given as a Python callable makes the worker wait that long for the GIL when it starts
(the caller holds it until its own part enters compiled code): in a GPT config M training
step the worker began its part a median 54 µs after the split did, the caller 21 µs. A
``CompiledJob`` (a C function's address and the integers it reads) never needs the GIL:
the worker's compiled watch loop calls it as soon as it sees the post. Every loop tgraph
compiles is posted so: GEMMs, fused chains, row kernels, attention (codegen/entry.py).

Parts are sized by how fast each thread has lately been, not split evenly. On a shared
host one core is at times slowed for seconds (a neighbour on its SMT sibling): in one GPT
config M training step the caller ran its parts 1.19× as fast as the worker (median over
the step's splits; another run 0.84×, another 1.0), so an even split waited ~0.45 ms a GEMM
for the slower half. Each part long enough to time well updates its thread's speed
relative to the caller's (a moving average), and the next split gives it that share. Every
kernel split here computes each row or output element by itself, so where the boundaries
fall changes no result.
"""

from __future__ import annotations

import ctypes
import functools
import math
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
#: seconds a keyed job (a compiled loop) must take on one thread for a split to pay: a
#: split costs ~10-15 µs, so LayerNorm over [64, 256] took 17 µs whole and 25 split, over
#: [128, 768] 53 whole and 43 split; the split won from ~30 µs whole on
WORTH_SPLITTING = 3e-5
#: runs of a keyed job timed whole before its verdict (the first may fault in fresh pages)
ALONE_RUNS = 2
#: seconds a worker (and a caller waiting for one) watches its flag before sleeping
SPIN = 2e-3
#: parts shorter than this (seconds) leave the threads' speeds as they are: start-up
#: latency would swamp the rate
TIMED_MIN = 3e-4
#: weight of the newest part in a thread's speed (a moving average of log speed ratios)
SPEED_STEP = 0.2
_SPEED_RANGE = (0.25, 4.0)

_POSTED, _DONE, _WAITING = 0, 8, 16  # flag slots, a cache line apart
#: a compiled part's slots: its function's address (0: the part is Python's), the address
#: of its arguments, its range, and the clock ticks it ran
_JOB, _ARGS, _LO, _HI, _TICKS = 24, 25, 26, 27, 28
_IDLE, _SAW_POST, _WAKE_CALLER = 0, 1, 2  # what a worker's watch saw


def cores() -> int:
    """Threads a job splits over: NUMBA_NUM_THREADS if set, else the usable cores."""
    env = os.environ.get("NUMBA_NUM_THREADS")
    return max(1, int(env)) if env and env.isdigit() else _usable_cores()


@functools.cache
def _usable_cores() -> int:
    """The cores this process may run on, asked once (a system call; every split asks)."""
    return len(os.sched_getaffinity(0))


def _flag_pointer(context, builder, signature, args):
    array = context.make_array(signature.args[0])(context, builder, args[0])
    return cgutils.get_item_pointer(context, builder, signature.args[0], array, [args[1]])


@intrinsic
def _load(typingctx, flags, i):
    """flags[i] read as a sequentially consistent atomic load: the loops below see another
    thread's store, and a store then a load on each side (_finish, _announce_wait) cannot
    both miss the other's."""
    def codegen(context, builder, signature, args):
        return builder.load_atomic(_flag_pointer(context, builder, signature, args),
                                   "seq_cst", 8)

    return types.int64(flags, i), codegen


@intrinsic
def _store(typingctx, flags, i, value):
    """flags[i] = value, a sequentially consistent atomic store."""
    def codegen(context, builder, signature, args):
        builder.store_atomic(args[2], _flag_pointer(context, builder, signature, args),
                             "seq_cst", 8)
        return context.get_dummy_value()

    return types.void(flags, i, types.int64), codegen


@intrinsic
def _swap_if(typingctx, flags, i, old, new):
    """flags[i] = new if it holds old, atomically; whether it did."""
    def codegen(context, builder, signature, args):
        pair = builder.cmpxchg(_flag_pointer(context, builder, signature, args), args[2],
                               args[3], "seq_cst", "seq_cst")
        return builder.extract_value(pair, 1)

    return types.boolean(flags, i, types.int64, types.int64), codegen


@intrinsic
def _fetch_add(typingctx, flags, i, value):
    """flags[i] += value atomically; the value it held before."""
    def codegen(context, builder, signature, args):
        step = context.cast(builder, args[2], signature.args[2], types.int64)
        return builder.atomic_rmw("add", _flag_pointer(context, builder, signature, args), step,
                                  "seq_cst")

    return types.int64(flags, i, value), codegen


@njit(nogil=True, cache=True)
def take_slot(counter):
    """This part's index among its job's parts (0, 1, ... as they start): which of the
    job's per-part buffers it uses. ``counter``: the job's own int64[1], 0 before it runs;
    a split makes at most ``cores()`` parts."""
    return _fetch_add(counter, 0, 1)


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


@intrinsic
def _ticks(typingctx):
    """The CPU's cycle counter (0 where LLVM has none for this CPU): parts timed in a
    compiled loop, with no Python clock there."""
    def codegen(context, builder, signature, args):
        counter = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.IntType(64), []), "llvm.readcyclecounter")
        return builder.call(counter, [])

    return types.int64(), codegen


@intrinsic
def _call_job(typingctx, address, lo, hi, args):
    """Call the C function at ``address`` as ``void f(int64 lo, int64 hi, int64 *args)``."""
    def codegen(context, builder, signature, values):
        i64 = ir.IntType(64)
        fnty = ir.FunctionType(ir.VoidType(), [i64, i64, i64.as_pointer()])
        fn = builder.inttoptr(values[0], fnty.as_pointer())
        builder.call(fn, [values[1], values[2], builder.inttoptr(values[3], i64.as_pointer())])
        return context.get_dummy_value()

    return types.void(types.int64, types.int64, types.int64, types.int64), codegen


_sched_yield = types.ExternalFunction("sched_yield", types.intc())


@njit(nogil=True, cache=True)
def _watch(flags, i, old, rounds):
    """Whether flags[i] moved off ``old`` within ``rounds`` reads; runs without the GIL.
    Every 64th read yields the core: when Linux has put both threads on one core, the one
    being waited for then runs."""
    for r in range(rounds):
        if _load(flags, i) != old:
            return True
        if r % 64 == 63:
            _sched_yield()
        else:
            _pause()
    return False


@njit(nogil=True, cache=True)
def _finish(flags, seen):
    """A worker's part is done: say so (outside the GIL, so the caller that sees it takes the
    GIL at once); whether a caller went to sleep waiting for it and must be woken."""
    _store(flags, _DONE, seen)
    return _swap_if(flags, _WAITING, 1, 2)


@njit(nogil=True, cache=True)
def _serve(flags, seen, rounds):
    """A worker's watch, without the GIL: runs each compiled part posted after ``seen`` as
    it comes, and returns (the last post seen, _SAW_POST) for a Python part, _WAKE_CALLER
    when a caller sleeps waiting for a part done here, _IDLE after ``rounds`` reads with
    nothing posted."""
    while True:
        if not _watch(flags, _POSTED, seen, rounds):
            return seen, _IDLE
        seen = _load(flags, _POSTED)
        if flags[_JOB] == 0:
            return seen, _SAW_POST
        start = _ticks()
        _call_job(flags[_JOB], flags[_LO], flags[_HI], flags[_ARGS])
        flags[_TICKS] = _ticks() - start
        if _finish(flags, seen):
            return seen, _WAKE_CALLER


@njit(nogil=True, cache=True)
def _publish(flags, posted):
    """Post part ``posted``: an atomic store, after which the worker sees the part's slots."""
    _store(flags, _POSTED, posted)


@njit(nogil=True, cache=True)
def _post_compiled(flags, address, args, lo, hi):
    """Post a compiled part: its slots, then the post (_publish); returns the post's
    number."""
    flags[_JOB], flags[_ARGS], flags[_LO], flags[_HI] = address, args, lo, hi
    posted = flags[_POSTED] + 1
    _store(flags, _POSTED, posted)
    return posted


@njit(nogil=True, cache=True)
def _own_part(address, lo, hi, args, flags, posted, rounds):
    """The caller's part lo..hi of a compiled job, then its watch for the worker's part
    ``posted``: (the caller's part's clock ticks, whether the worker's was done within
    ``rounds`` reads). One call where the caller's part, its timing and the watch were
    three, each a few microseconds of Python in a step whose GEMMs have just evicted it."""
    start = _ticks()
    _call_job(address, lo, hi, args)
    own = _ticks() - start
    return own, _watch(flags, _DONE, posted - 1, rounds)


@njit(nogil=True, cache=True)
def _run_job(address, lo, hi, args):
    _call_job(address, lo, hi, args)


@njit(nogil=True, cache=True)
def _announce_wait(flags, posted):
    """The caller gave up watching for part ``posted``: whether it must sleep until the
    worker wakes it. Either the worker's _finish sees WAITING = 1 and will wake it, or the
    caller sees DONE here (a store then a load on each side: one sees the other's)."""
    _store(flags, _WAITING, 1)
    if _load(flags, _DONE) != posted:
        return True
    # done already: take the request back, unless the worker took it first and will wake us
    return not _swap_if(flags, _WAITING, 1, 0)


#: where NumPy's array struct keeps its data pointer: right after the object header
#: (PyArrayObject_fields: PyObject_HEAD, then ``char *data``)
_DATA_AT = object.__basicsize__
_read_word = ctypes.c_size_t.from_address


def _struct_address(a: np.ndarray) -> int:
    return _read_word(id(a) + _DATA_AT).value


def _ctypes_address(a: np.ndarray) -> int:
    return a.ctypes.data


def _struct_is_numpys() -> bool:
    """Whether the struct is laid out as _DATA_AT says (not under another interpreter's
    object header): a wrong address would be read as memory."""
    probe = np.arange(3.0)[1:]
    return _struct_address(probe) == probe.ctypes.data


#: ``data_address(a)``: the address of ``a``'s first element, read from its struct: 0.15 µs
#: where ``a.ctypes.data`` builds a ctypes object each call (1.1-1.9 µs here), and a
#: training step asks for ~1,000 (every GEMM, loop and attention call passes its arrays so)
data_address = _struct_address if _struct_is_numpys() else _ctypes_address


class CompiledJob:
    """A part any thread runs without the GIL: the address of a C function
    ``void f(int64 lo, int64 hi, int64 *args)`` (a Numba ``cfunc``) and the int64 array it
    reads its operands from, kept alive here with the arrays those name (``keep``)."""

    def __init__(self, address: int, args: np.ndarray, keep: tuple = ()):
        self.address, self.args = address, np.ascontiguousarray(args, np.int64)
        self.keep = keep

    def __call__(self, lo: int, hi: int) -> None:
        _run_job(self.address, lo, hi, data_address(self.args))


@functools.cache
def _ticks_per_second() -> float:
    """The cycle counter's rate (0 where it has none), measured over 2 ms."""
    start, t0 = _clock(), time.perf_counter()
    while time.perf_counter() - t0 < 2e-3:
        pass
    return (_clock() - start) / (time.perf_counter() - t0)


@njit(nogil=True, cache=True)
def _clock():
    return _ticks()


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
        self.flags = np.zeros(32, np.int64)
        self.lock = threading.Lock()
        self.wake, self.finished = threading.Semaphore(0), threading.Semaphore(0)
        self.asleep = False
        self.part: tuple | None = None
        self.error: BaseException | None = None
        self.speed = 1.0  # parts per second, relative to the caller's
        self.elapsed = 0.0  # seconds the last part ran
        self.rounds = max(1, int(SPIN * _rounds_per_second()))
        threading.Thread(target=self._loop, name=f"tgraph-kernel_{index}", daemon=True).start()

    def post(self, job: Callable, lo: int, hi: int) -> int:
        """Post part lo..hi of ``job``; returns the post's number."""
        with self.lock:
            if isinstance(job, CompiledJob):
                posted = _post_compiled(self.flags, job.address, data_address(job.args), lo, hi)
            else:
                self.flags[_JOB], self.part = 0, (job, lo, hi)
                posted = int(self.flags[_POSTED]) + 1
                _publish(self.flags, posted)
            if self.asleep:
                self.asleep = False
                self.wake.release()
        return posted

    def join(self, done: bool = False) -> None:
        """Wait for the part posted last (``done``: the caller saw it done already);
        re-raise its error here."""
        posted = int(self.flags[_POSTED])
        if not done and not _watch(self.flags, _DONE, posted - 1, self.rounds):
            if _announce_wait(self.flags, posted):
                self.finished.acquire()
            self.flags[_WAITING] = 0
        if self.flags[_JOB]:
            rate = _ticks_per_second()
            self.elapsed = self.flags[_TICKS] / rate if rate > 0 else 0.0
        error, self.error = self.error, None
        if error is not None:
            raise error

    def _loop(self) -> None:
        seen = 0
        while True:
            seen, state = _serve(self.flags, seen, self.rounds)
            if state == _IDLE:
                with self.lock:  # the caller posts under this lock: no wake-up is lost
                    self.asleep = self.flags[_POSTED] == seen
                if self.asleep:
                    self.wake.acquire()
                continue
            if state == _SAW_POST:
                job, lo, hi = self.part
                t0 = time.perf_counter()
                try:
                    job(lo, hi)
                except BaseException as e:  # noqa: BLE001 (re-raised by the caller's join)
                    self.error = e
                self.elapsed = time.perf_counter() - t0
                if not _finish(self.flags, seen):
                    continue
            self.finished.release()


@functools.cache
def _workers() -> tuple[_Worker, ...]:
    return tuple(_Worker(i) for i in range(max(cores() - 1, 1)))


#: key -> (runs timed whole, the fastest in seconds): split's verdicts on keyed jobs
_alone: dict = {}
#: verdicts kept at most (keys hold shapes: a process serving ever new sequence lengths
#: would otherwise grow the table without end); when full it starts again, each job then
#: timed whole ALONE_RUNS times more
ALONE_MAX = 4096

# one split at a time uses the workers; a second caller (another thread, or a job that
# splits) runs its job on its own thread
_busy = threading.Lock()


def _after_fork() -> None:  # the child has none of the parent's threads
    global _busy
    _busy = threading.Lock()
    _workers.cache_clear()
    _usable_cores.cache_clear()


os.register_at_fork(after_in_child=_after_fork)


def split(job: Callable[[int, int], object], n: int, work: int,
          min_work: int = PARALLEL_MIN, key=None, least: int = 1) -> None:
    """``job(start, stop)`` over 0..n in one part per core (one part when ``work``, the
    elements touched or the kernel's own unit, is below ``min_work``), each part ``least``
    units or more. ``key`` (hashable: the compiled loop's address and the shape, say) names
    a job whose cost ``work`` does not tell: its first ALONE_RUNS runs go whole on the
    calling thread, timed, and it is split from then on only if the fastest took
    WORTH_SPLITTING or more."""
    parts = min(cores() if work >= min_work else 1, max(n // least, 1))
    if parts > 1 and key is not None:
        runs, fastest = _alone.get(key, (0, math.inf))
        if runs < ALONE_RUNS:
            t0 = time.perf_counter()
            job(0, n)
            if len(_alone) >= ALONE_MAX:
                _alone.clear()
            _alone[key] = (runs + 1, min(fastest, time.perf_counter() - t0))
            return
        if fastest < WORTH_SPLITTING:
            parts = 1
    if parts == 1 or not _busy.acquire(blocking=False):
        job(0, n)
        return
    try:
        helpers = _workers()[:parts - 1]
        bounds = _bounds(n, [1.0, *(w.speed for w in helpers)], least)
        posts = [w.post(job, lo, hi) for w, lo, hi in zip(helpers, bounds[1:-1], bounds[2:])]
        rate = _ticks_per_second()
        if len(helpers) == 1 and isinstance(job, CompiledJob) and rate > 0:
            (w,) = helpers  # two cores, a compiled job: the caller's part and wait compiled
            ticks, done = _own_part(job.address, bounds[0], bounds[1], data_address(job.args),
                                    w.flags, posts[0], w.rounds)
            own = ticks / rate
            w.join(done)
        else:
            t0 = time.perf_counter()
            try:
                job(bounds[0], bounds[1])
            finally:
                own = time.perf_counter() - t0
                for w in helpers:
                    w.join()
        for w, lo, hi in zip(helpers, bounds[1:-1], bounds[2:]):
            _learn(w, (hi - lo) / max(w.elapsed, 1e-9), bounds[1] / max(own, 1e-9),
                   min(own, w.elapsed))
    finally:
        _busy.release()


def _bounds(n: int, speeds: list[float], least: int = 1) -> list[int]:
    """Cut 0..n (n ≥ least·len(speeds)) into parts in proportion to the speeds, each at
    least ``least`` units."""
    if len(speeds) == 2:  # two cores
        cut = round(n * speeds[0] / (speeds[0] + speeds[1]))
        return [0, min(max(cut, least), n - least), n]
    total, cuts, ahead = sum(speeds), [0], 0.0
    for i, v in enumerate(speeds[:-1]):
        ahead += v
        later = len(speeds) - 1 - i  # parts after this cut, ``least`` units each at least
        cuts.append(min(max(round(n * ahead / total), cuts[-1] + least), n - later * least))
    return [*cuts, n]


def _learn(worker: _Worker, rate: float, own_rate: float, shorter: float) -> None:
    """Move the worker's speed toward ``rate / own_rate`` (units per second, its and the
    caller's) when both parts ran long enough to time."""
    if shorter < TIMED_MIN:
        return
    ratio = min(max(rate / own_rate, _SPEED_RANGE[0]), _SPEED_RANGE[1])
    worker.speed = math.exp((1 - SPEED_STEP) * math.log(worker.speed)
                            + SPEED_STEP * math.log(ratio))
