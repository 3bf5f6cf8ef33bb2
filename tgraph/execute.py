"""The one executor: compile a graph once into a schedule, then run it with feeds.

A schedule is a list of steps (kernel, input slots, output slots, slots to free after the
step). Slots hold arrays in a flat list; an intermediate's slot is cleared right after its
last use, so a forward pass holds only what is still needed. Symbolic dims (``B``, ``T``)
are bound from the feeds on each run; attrs that carry shapes are bound then too.

Memory: for each set of dims, a memory plan (tgraph/memplan.py) gives every result the
backend can write into a given array a range of one arena, from the schedule's lifetimes,
in place over a dying input where that is safe; those kernels then write there (``out=``).
The arena is allocated on the first run and reused by the next (one per concurrent run).
Results outside the plan are allocated by their kernels, and one of them can still take an
input that dies at its step (same shape and dtype) when at run time nothing else holds that
array. A run with ``observe`` uses no arena: an observer may keep what it is shown.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tgraph.errors import FeedError, ShapeError
from tgraph.io import check_weights
from tgraph.ir import CONST, INPUT, PARAM, Graph, Node
from tgraph.memplan import ALIGN, Into, MemoryPlan, StepInfo, plan_memory
from tgraph.sanitize import clip
from tgraph.shapes import eval_shape, fmt_shape

_KIND = {"f": "float", "i": "int", "u": "int", "b": "bool"}


@dataclass
class Step:
    node: Node
    kernel: Callable
    ins: tuple[int, ...]
    outs: tuple[int, ...]
    free: tuple[int, ...]
    symbolic: bool  # has shape attrs with symbols, bound per run
    reuse: tuple[int, ...] = ()  # dying input positions of the result's shape and dtype
    into: Into | None = None  # the kernel writing into a given array


@dataclass
class _Binding:
    """What runs with one set of dims share: bound kernels, the memory plan, and idle
    arenas (each a list of per-step views, None where the kernel allocates)."""

    kernels: list[Callable]
    plan: MemoryPlan
    outputs: list[tuple[tuple[int, ...], str] | None]  # each planned step's shape, dtype
    idle: list[list] = field(default_factory=list)

    def take_views(self) -> list | None:
        if not self.plan.offsets:
            return None
        if self.idle:
            return self.idle.pop()
        arena = _aligned_bytes(self.plan.arena_bytes)
        made: dict[tuple, np.ndarray] = {}  # one object per range and type: an in-place
        # step's out is then its input itself (kernels check by identity)
        views: list = [None] * len(self.outputs)
        for i, off in self.plan.offsets.items():
            shape, dtype = self.outputs[i]
            key = (off, shape, dtype)
            if key not in made:
                size = math.prod(shape) * np.dtype(dtype).itemsize
                made[key] = arena[off:off + size].view(dtype).reshape(shape)
            views[i] = made[key]
        return views


def _aligned_bytes(nbytes: int) -> np.ndarray:
    """uint8[nbytes] starting on an ALIGN boundary (NumPy's own start 16 bytes past one, so
    every planned result would straddle cache lines and SIMD loads split)."""
    raw = np.empty(nbytes + ALIGN, np.uint8)
    start = -raw.ctypes.data % ALIGN
    return raw[start:start + nbytes]


class Executable:
    """A graph compiled for one backend. Call ``run(feeds, params)``."""

    def __init__(self, graph: Graph, backend: Any = "numpy", check: bool = False,
                 plan_memory: bool = True):
        from tgraph.backends import get_backend
        from tgraph.ops.registry import get_op

        self.graph = graph.validate()
        self.backend = get_backend(backend) if isinstance(backend, str) else backend
        self.check = check
        self.plan_memory = plan_memory
        slot: dict = {}
        for v in graph.values():
            slot[v] = len(slot)
        self.slot = slot
        self.n_slots = len(slot)
        keep = {slot[v] for v in graph.outputs.values()}
        last_use: dict[int, int] = {}
        for i, n in enumerate(graph.nodes):
            for v in n.inputs:
                last_use[slot[v]] = i
            for v in n.outputs:  # an output nothing reads dies at once
                last_use.setdefault(slot[v], i)
        leaves = {slot[v] for v in (*graph.inputs, *graph.params, *graph.consts)}
        free_at: dict[int, list[int]] = {}
        for s, i in last_use.items():
            if s not in keep and s not in leaves:
                free_at.setdefault(i, []).append(s)
        self.steps: list[Step] = []
        getattr(self.backend, "compile_ahead", lambda nodes: None)(graph.nodes)
        prepare = getattr(self.backend, "prepare", lambda node: None)
        writes_into = getattr(self.backend, "writes_into", lambda node: None)
        for i, n in enumerate(graph.nodes):
            opdef = get_op(n.op)
            kernel = self.backend.kernels.get(n.op) or opdef.kernel
            symbolic = any(isinstance(d, str) for k in opdef.shape_attrs
                           for d in (n.attrs.get(k) or ()))
            compiled = None if symbolic else prepare(n)
            ins = tuple(slot[v] for v in n.inputs)
            dying = set(free_at.get(i, ()))
            into = None if symbolic or len(n.outputs) != 1 else writes_into(n)
            reuse = tuple(k for k, v in enumerate(n.inputs)
                          if ins[k] in dying and ins.count(ins[k]) == 1 and into is not None
                          and into.in_place and v.shape == n.output.shape
                          and v.dtype == n.output.dtype)
            self.steps.append(Step(
                n, compiled or (kernel if symbolic else
                                functools.partial(kernel, self.backend.xp, **n.attrs)),
                ins, tuple(slot[v] for v in n.outputs), tuple(sorted(dying)), symbolic,
                reuse, into))
        self._bound: dict[tuple, _Binding] = {}
        self._consts = {slot[c]: self.backend.asarray(c.data) for c in graph.consts}

    # ----- binding -----------------------------------------------------------
    def bind_dims(self, arrays: Mapping[str, Any], dims: Mapping[str, int] | None = None):
        return bind_dims(self.graph, arrays, dims)

    def _binding(self, env: dict) -> _Binding:
        key = tuple(sorted(env.items()))
        if key not in self._bound:
            from tgraph.budget import check_bytes
            from tgraph.ops.registry import get_op

            plan = self.memory_plan(env)
            check_bytes(plan.planned_peak, f"running {clip(self.graph.name)} with "
                        f"{_fmt_env(env)}")
            xp = self.backend.xp
            fns = []
            for st in self.steps:
                if not st.symbolic:
                    fns.append(st.kernel)
                    continue
                attrs = dict(st.node.attrs)
                for k in get_op(st.node.op).shape_attrs:
                    attrs[k] = list(eval_shape(attrs[k], env))
                fns.append(functools.partial(st.kernel, xp, **attrs))
            outputs = [(eval_shape(st.node.output.shape, env), st.node.output.dtype)
                       if i in plan.offsets else None for i, st in enumerate(self.steps)]
            self._bound[key] = _Binding(fns, plan, outputs)
        return self._bound[key]

    def memory_plan(self, env: Mapping[str, int]) -> MemoryPlan:
        """Where each planned result lives in the arena for these dims, and the peaks
        (``plan_memory=False``: no arena, every result allocated by its kernel)."""
        from tgraph.ops.registry import get_op

        sizes = {s: math.prod(eval_shape(v.shape, env)) * np.dtype(v.dtype).itemsize
                 for v, s in self.slot.items() if v.kind not in (INPUT, PARAM, CONST)}
        infos = [StepInfo(st.ins, st.outs, st.free,
                          sizes[st.outs[0]] if len(st.outs) == 1 else 0,
                          st.into if self.plan_memory else None,
                          not get_op(st.node.op).fresh_result) for st in self.steps]
        same_layout = {(i, k) for i, st in enumerate(self.steps) for k in st.reuse}
        keep = {self.slot[v] for v in self.graph.outputs.values()}
        return plan_memory(infos, sizes, keep, same_layout)

    def release_memory(self) -> None:
        """Drop the idle arenas (the next run allocates one again)."""
        for bound in self._bound.values():
            bound.idle.clear()

    # ----- running -----------------------------------------------------------
    def run(self, feeds: Mapping[str, Any] | None = None, params: Mapping[str, Any] | None = None,
            dims: Mapping[str, int] | None = None,
            observe: Callable[[Node, list], None] | None = None) -> dict[str, np.ndarray]:
        """Outputs as NumPy arrays, by output name. ``observe(node, outputs)``, when given,
        sees every node's outputs (on the device) right after its step, before any is freed."""
        out = self.run_device(feeds, params, dims, observe)
        return {k: self.backend.to_numpy(a) for k, a in out.items()}

    def run_device(self, feeds=None, params=None, dims=None, observe=None) -> dict[str, Any]:
        """Like run, but outputs stay on the backend's device."""
        feeds, params = dict(feeds or {}), dict(params or {})
        g, be = self.graph, self.backend
        check_feeds(g, feeds)
        for v in g.inputs:
            feeds[v.name] = conform(feeds[v.name], v, "feed")
        check_weights(g, params)
        for v in g.params:
            params[v.name] = conform(params[v.name], v, "parameter")
        env = self.bind_dims(feeds, dims)
        check_int_ranges(g, feeds)
        bound = self._binding(env)
        buf: list[Any] = [None] * self.n_slots
        for v in g.inputs:
            buf[self.slot[v]] = be.asarray(feeds[v.name])
        for v in g.params:
            buf[self.slot[v]] = be.asarray(params[v.name])
        for s, a in self._consts.items():
            buf[s] = a
        st = None
        views = bound.take_views() if observe is None else None
        try:
            for i, (st, fn) in enumerate(zip(self.steps, bound.kernels)):
                _step(st, fn, buf, views[i] if views else None)
                if self.check:
                    self._check(st, buf, env)
                if observe is not None:
                    observe(st.node, [buf[s] for s in st.outs])
                for s in st.free:
                    buf[s] = None
        except (IndexError, ValueError, FloatingPointError, ArithmeticError, MemoryError) as e:
            # data the types cannot rule out: a token id past the vocabulary, T past a
            # learned position table, dims too large for this machine's memory
            ins = ", ".join(f"{buf[i].dtype}[{fmt_shape(buf[i].shape)}]" for i in st.ins)
            raise FeedError(f"{st.node.where()} failed on inputs {ins} ({_fmt_env(env)}): "
                            f"{type(e).__name__}: {e}") from None
        finally:
            if views is not None:
                bound.idle.append(views)
        return {k: buf[self.slot[v]] for k, v in g.outputs.items()}

    def _check(self, st: Step, buf, env) -> None:
        for v, s in zip(st.node.outputs, st.outs):
            a = buf[s]
            want = eval_shape(v.shape, env)
            if tuple(a.shape) != want or str(a.dtype) != v.dtype:
                raise ShapeError(f"{st.node.where()}: kernel gave {a.dtype}[{fmt_shape(a.shape)}]"
                                 f" but the shape rule says {v.dtype}[{fmt_shape(want)}]")

    def flops(self, env: Mapping[str, int]) -> int:
        return graph_flops(self.graph, env)


def _step(st: Step, fn: Callable, buf: list, out) -> None:
    """Run one step: into its planned buffer ``out``, else into a dying input's array when
    nothing else holds that array (a function of its own, so no local outlives the step and
    counts as a holder), else into what its kernel allocates."""
    args = [buf[i] for i in st.ins]
    if out is not None:
        res = st.into.fn(out, *args)
    else:
        target = next((args[k] for k in st.reuse if _unshared(args[k])), None) \
            if st.reuse else None
        res = st.into.fn(target, *args) if target is not None else fn(*args)
    outs = st.outs
    if len(outs) == 1:
        buf[outs[0]] = res
    else:
        for s, r in zip(outs, res):
            buf[s] = r


def _unshared(a) -> bool:
    """Whether ``a`` owns its memory and is held only by its slot and the step's argument
    list (and this call's two references): no view of it, no other slot sees a write."""
    return (getattr(a, "base", 0) is None and a.flags.writeable and a.flags.c_contiguous
            and sys.getrefcount(a) <= 4)


def bind_dims(graph: Graph, arrays: Mapping[str, Any], dims: Mapping[str, int] | None = None):
    """Symbol -> int from the feeds' shapes; rejects a feed that disagrees."""
    env = dict(dims or {})
    for v in graph.inputs:
        shape = arrays[v.name].shape
        if len(shape) != v.type.rank:
            raise FeedError(f"feed {v.name!r} has shape {fmt_shape(shape)}, but the graph "
                            f"expects rank {v.type.rank}: {fmt_shape(v.shape)}")
        for d, n in zip(v.shape, shape):
            if isinstance(d, str) and d.isidentifier():
                if env.setdefault(d, n) != n:
                    raise FeedError(f"feed {v.name!r} has shape {fmt_shape(shape)}: dim {d} "
                                    f"is {n} here but {env[d]} elsewhere")
    limits = graph.meta.get("dim_limits", {})
    for d, n in env.items():
        if d in limits and n > limits[d]:
            raise FeedError(f"dim {d}={n} is more than this model's max_len={limits[d]} "
                            f"(its position table has {limits[d]} rows)")
    for v in graph.inputs:
        try:
            want = eval_shape(v.shape, env)
        except KeyError as e:
            raise FeedError(f"symbol {e.args[0]} of {v.name!r} is not bound") from None
        if want != tuple(arrays[v.name].shape):
            raise FeedError(f"feed {v.name!r} has shape {fmt_shape(arrays[v.name].shape)}, "
                            f"expected {fmt_shape(want)} (from {fmt_shape(v.shape)} with "
                            f"{_fmt_env(env)})")
    return env


def check_feeds(graph: Graph, feeds: Mapping[str, Any]) -> None:
    """One feed for each input of the graph, and none it does not have."""
    unknown = sorted(set(feeds) - {v.name for v in graph.inputs})
    if unknown:  # a typo would otherwise be ignored while the real input goes missing
        raise FeedError(f"graph {graph.name!r} has no input {unknown[0]!r}; its inputs: "
                        f"{', '.join(v.name for v in graph.inputs) or 'none'}")
    for v in graph.inputs:
        if v.name not in feeds:
            raise FeedError(f"missing feed for graph input {v.name!r} ({v.type})")


def conform(a, v, what: str):
    """Accept an array whose dtype kind matches (float/int/bool); cast within the kind."""
    if not hasattr(a, "dtype"):
        a = np.asarray(a)
    want = _dtype(v.dtype)
    if a.dtype == want:  # (str(dtype) took ~5 µs: a millisecond a run over gpt2's weights)
        return a
    if _KIND.get(a.dtype.kind) != _KIND[want.kind]:
        raise FeedError(f"{what} {v.name!r} has dtype {a.dtype}, expected {v.dtype} "
                        f"({fmt_shape(v.shape)})")
    return a.astype(want)


@functools.cache
def _dtype(name: str) -> np.dtype:
    return np.dtype(name)


def check_int_ranges(graph: Graph, feeds: Mapping[str, Any]) -> None:
    """Token ids and targets inside [0, high) (``meta["int_ranges"]``): -1 and an id past
    the vocabulary are the same clear error, not a wrap to the last row or an IndexError."""
    for name, high in graph.meta.get("int_ranges", {}).items():
        a = feeds.get(name)
        if a is None or not a.size or a.dtype.kind not in "iu":
            continue
        low, top = int(a.min()), int(a.max())
        if low < 0 or top >= high:
            bad = low if low < 0 else top
            raise FeedError(f"feed {name!r} holds id {bad}; ids must be in [0, {high}) "
                            f"(the vocabulary or class count)")


def _fmt_env(env) -> str:
    return ", ".join(f"{k}={n}" for k, n in sorted(env.items())) or "no symbols"


def graph_flops(graph: Graph, env: Mapping[str, int]) -> int:
    from tgraph.ops.registry import get_op

    total = 0
    for n in graph.nodes:
        total += node_flops(get_op(n.op), n, env)
    return total


def node_flops(opdef, n: Node, env: Mapping[str, int]) -> int:
    ins = [eval_shape(v.shape, env) for v in n.inputs]
    outs = [eval_shape(v.shape, env) for v in n.outputs]
    return int(opdef.flops(ins, outs, **n.attrs))


def default_dims(graph: Graph) -> dict[str, int]:
    """Dims for counting when the user gives none: the graph's hints, else 1 per symbol."""
    from tgraph.shapes import symbols

    env = {s: 1 for v in graph.values() for s in symbols(v.shape)}
    env.update(graph.meta.get("dims", {}))
    return env


def run(graph: Graph, feeds=None, params=None, backend: Any = "numpy", dims=None):
    """Compile and run once; keep an ``Executable`` to run a graph many times."""
    return Executable(graph, backend).run(feeds, params, dims)


def live_bytes_peak(ex: Executable, env: Mapping[str, int]) -> int:
    """Peak bytes held by intermediates under the schedule (freeing at last use)."""
    live = peak = 0
    size = {}
    for v, s in ex.slot.items():
        if v.kind not in (INPUT, PARAM, CONST):
            size[s] = math.prod(eval_shape(v.shape, env)) * np.dtype(v.dtype).itemsize
    for st in ex.steps:
        live += sum(size[s] for s in st.outs)
        peak = max(peak, live)
        live -= sum(size[s] for s in st.free)
    return peak
