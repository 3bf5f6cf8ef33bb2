"""``tgraph bench``'s measurements: median forward and forward+backward times after warm-up,
compile time and peak memory of a graph at an optimisation level on a backend.

No peer runs here (benchmarks/ compare against PyTorch and JAX); this is the number a user
tunes against. Timings are medians of ``repeats`` runs after one warm-up run, so a noisy
neighbour on a shared machine moves them less than a mean.
"""

from __future__ import annotations

import statistics
import time
import tracemalloc
from dataclasses import asdict, dataclass

from tgraph.errors import TGraphError
from tgraph.ir import Graph


@dataclass
class BenchResult:
    forward_ms: float
    step_ms: float | None  # None: the graph has no scalar loss to differentiate
    compile_s: float  # passes, executor set-up, and kernel compilation in the first runs
    peak_mb: float | None  # measured: the most bytes NumPy arrays held during one step (or
    # forward); None where the arrays live in another runtime (ONNX Runtime, XLA)
    planned_mb: float | None  # the memory plan's peak of intermediates: its arena and what
    # the kernels outside it allocate at most (tgraph's executor)
    backend: str
    level: int
    nodes: int  # of the graph timed last (forward+backward when there is a step)
    dims: dict

    def to_json(self) -> dict:
        return asdict(self)


def bench(graph: Graph, dims: dict | None = None, backend: str = "numpy", level: int = 2,
          repeats: int = 5, loss: str = "loss", progress=None) -> BenchResult:
    """Time ``graph`` compiled at ``level``; its step too when it has a scalar ``loss``.

    ``progress(label)`` is called before each phase (the CLI shows it as a status line)."""
    from tgraph.execute import Executable, default_dims
    from tgraph.feeds import random_feeds
    from tgraph.params import init_params, pack_params
    from tgraph.passes import optimize, training_graph
    from tgraph.runtime import executable

    say = progress or (lambda label: None)
    env = {**default_dims(graph), **(dims or {})}
    feeds, params = random_feeds(graph, env, 0), init_params(graph, 0)
    has_step = loss in graph.outputs and graph.outputs[loss].shape == ()
    say(f"compiling the forward graph at -O{level}")
    t0 = time.perf_counter()
    forward = executable(optimize(graph, level)[0], backend)
    compile_s = time.perf_counter() - t0

    def laid_out(ex):  # heads' weights in one array each where the host runs the graph
        numpy = isinstance(ex, Executable) and ex.backend.name == "numpy"
        return pack_params(ex.graph, params) if numpy else params

    say("timing the forward pass")
    timed, timed_params, step_ms = forward, laid_out(forward), None
    fwd_ms, warm_s = _median_ms(forward, feeds, timed_params, env, repeats)
    compile_s += warm_s
    if has_step:
        say(f"compiling the forward+backward graph at -O{level}")
        t0 = time.perf_counter()
        timed = executable(training_graph(graph, loss, level), backend)
        compile_s += time.perf_counter() - t0
        say("timing the forward+backward step")
        timed_params = laid_out(timed)
        step_ms, warm_s = _median_ms(timed, feeds, timed_params, env, repeats)
        compile_s += warm_s
    ours = isinstance(timed, Executable)
    if ours:
        say("measuring peak memory")
    return BenchResult(
        forward_ms=fwd_ms, step_ms=step_ms, compile_s=compile_s,
        peak_mb=_peak_bytes(timed, feeds, timed_params, env) / 2**20 if ours else None,
        planned_mb=timed.memory_plan(env).planned_peak / 2**20 if ours else None,
        backend=timed.backend.name if ours else {"ort": "onnxruntime"}.get(backend, backend),
        level=level, nodes=len(timed.graph.nodes), dims=env)


def _median_ms(ex, feeds, params, env, repeats: int) -> tuple[float, float]:
    """Median of ``repeats`` runs in ms, and the warm-up run's time beyond it in s (the
    kernels compiled on first use)."""
    if repeats < 1:
        raise TGraphError(f"repeats must be at least 1, got {repeats}")
    run = getattr(ex, "run_device", ex.run)
    sync = getattr(getattr(ex, "backend", None), "synchronize", lambda: None)
    t0 = time.perf_counter()
    run(feeds, params, env)
    sync()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(feeds, params, env)
        sync()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return med * 1e3, max(first - med, 0.0)


def _peak_bytes(ex, feeds, params, env) -> int:
    """Bytes of arrays allocated and alive at the worst moment of one run (NumPy reports
    its buffers to tracemalloc; on a GPU, the memory pool's high-water mark is not seen)."""
    getattr(ex, "release_memory", lambda: None)()  # the arena is allocated in the run
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        getattr(ex, "run_device", ex.run)(feeds, params, env)
        return max(tracemalloc.get_traced_memory()[1] - base, 0)
    finally:
        tracemalloc.stop()
