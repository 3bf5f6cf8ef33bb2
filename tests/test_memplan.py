"""The memory plan (tgraph/memplan.py): results written into one arena at ranges chosen ahead
of time. Checked against the executor without a plan (every result allocated by its
kernel): the same bits; no live value overwritten before its last reader (each kernel's
inputs compared, as it is called, with the unplanned run's values); outputs never in the
arena; one arena per concurrent run; and the planned peak against tracemalloc's measure."""

from __future__ import annotations

import dataclasses
import threading
import tracemalloc

import numpy as np
import pytest

import tgraph as tg
from tgraph import builder as tb
from tgraph.feeds import random_feeds
from tgraph.memplan import ALIGN, Into, StepInfo, plan_memory
from tgraph.models import build_model
from tgraph.passes import optimize, training_graph


def model_graphs():
    gpt = build_model("gpt", preset="tiny", n_layers=2, loss=True)
    bert = build_model("bert", preset="tiny", n_layers=1)
    return {"gpt forward -O0": optimize(gpt, 0)[0], "gpt forward -O2": optimize(gpt, 2)[0],
            "gpt step -O1": training_graph(gpt, "loss", 1),
            "gpt step -O2": training_graph(gpt, "loss", 2), "bert -O2": optimize(bert, 2)[0]}


def reference_values(graph, feeds, params):
    """Every node's outputs in a run without a plan, by value name."""
    seen = {}

    def keep(node, outs):
        for v, a in zip(node.outputs, outs):
            seen[v.name] = np.array(a, copy=True)

    tg.Executable(graph, plan_memory=False).run(feeds, params, observe=keep)
    return seen


@pytest.mark.parametrize("name", list(model_graphs()))
def test_planned_runs_read_only_live_values_and_give_the_same_bits(name):
    graph = model_graphs()[name]
    dims = {"B": 2, "T": 8}
    feeds, params = random_feeds(graph, dims, 0), tg.init_params(graph, 0)
    want = reference_values(graph, feeds, params)
    ex = tg.Executable(graph)
    assert ex.memory_plan(dims).offsets, "nothing planned: the test would check nothing"
    checked = []

    def check(st, arrays):
        for v, a in zip(st.node.inputs, arrays):
            if v.name in want:  # an intermediate: still the value it was given
                np.testing.assert_array_equal(a, want[v.name], err_msg=st.node.where())
        checked.append(st.node.name)

    def guarded(st, fn):
        if st.symbolic:  # the executor binds xp and the shape attrs per run
            return lambda xp, *arrays, **attrs: check(st, arrays) or fn(xp, *arrays, **attrs)
        return lambda *arrays: check(st, arrays) or fn(*arrays)

    for st in ex.steps:
        st.kernel = guarded(st, st.kernel)
        if st.into is not None:
            st.into = dataclasses.replace(
                st.into, fn=lambda out, *arrays, st=st, fn=st.into.fn:
                check(st, arrays) or fn(out, *arrays))
    first = ex.run(feeds, params)
    assert len(checked) == len(ex.steps)
    again = ex.run(feeds, params)  # the second run reuses the first's arena
    for k, v in graph.outputs.items():
        np.testing.assert_array_equal(first[k], want[v.name], err_msg=k)
        np.testing.assert_array_equal(again[k], want[v.name], err_msg=k)


def test_planned_results_start_on_cache_lines():
    graph = model_graphs()["gpt step -O2"]
    dims = {"B": 2, "T": 8}
    ex = tg.Executable(graph)
    planned = ex.memory_plan(dims).offsets
    starts = []
    for i, st in enumerate(ex.steps):
        if i in planned:
            st.into = dataclasses.replace(
                st.into, fn=lambda out, *arrays, fn=st.into.fn:
                starts.append(out.ctypes.data) or fn(out, *arrays))
    ex.run(random_feeds(graph, dims, 0), tg.init_params(graph, 0))
    assert len(starts) == len(planned)
    assert [a % ALIGN for a in starts] == [0] * len(starts)


def test_outputs_and_their_views_stay_out_of_the_arena():
    g = tg.Graph("views")
    x = g.input("x", ("B", 16), "float32")
    w = g.param("w", (16, 16), "float32")
    h = x @ w  # planned: nothing but a view of it is an output
    y = tb.tanh(h @ w) + 1.0
    g.set_output("flat", tb.reshape(h, [-1]))
    g.set_output("y", y)
    ex = tg.Executable(optimize(g, 2)[0])
    rng = np.random.default_rng(0)
    params = {"w": rng.standard_normal((16, 16), dtype=np.float32)}
    x1, x2 = (rng.standard_normal((4, 16), dtype=np.float32) for _ in range(2))
    out1 = ex.run({"x": x1}, params)
    keep = {k: v.copy() for k, v in out1.items()}
    ex.run({"x": x2}, params)  # would overwrite out1 if it lived in the arena
    for k in keep:
        np.testing.assert_array_equal(out1[k], keep[k])
    np.testing.assert_array_equal(keep["flat"], (x1 @ params["w"]).ravel())


def test_concurrent_runs_each_take_an_arena():
    graph = optimize(build_model("gpt", preset="tiny", n_layers=2), 2)[0]
    ex = tg.Executable(graph)
    params = tg.init_params(graph, 0)
    feeds = [random_feeds(graph, {"B": 2, "T": 8}, seed) for seed in range(4)]
    want = [tg.Executable(graph, plan_memory=False).run(f, params) for f in feeds]
    got: dict[int, list] = {i: [] for i in range(4)}

    def worker(i):
        for _ in range(5):
            got[i].append(ex.run(feeds[i], params))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        for out in got[i]:
            for k in out:
                np.testing.assert_array_equal(out[k], want[i][k])


def test_the_measured_peak_stays_within_the_plan():
    """tracemalloc sees every NumPy buffer: one planned run (arena allocated in it) holds
    at most the plan's arena plus its peak of what kernels allocate, and less than running
    every result from the heap would need at once."""
    graph = training_graph(build_model("gpt", preset="tiny", n_layers=2, loss=True), "loss", 2)
    dims = {"B": 4, "T": 16}
    feeds, params = random_feeds(graph, dims, 0), tg.init_params(graph, 0)
    ex = tg.Executable(graph)
    plan = ex.memory_plan(dims)
    ex.run(feeds, params)
    ex.release_memory()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        ex.run_device(feeds, params, dims)
        measured = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    outputs = sum(ex.run(feeds, params)[k].nbytes for k in graph.outputs)
    assert plan.arena_bytes > 0
    assert measured <= plan.planned_peak + outputs + (1 << 16)
    everything = sum(a.nbytes for a in reference_values(graph, feeds, params).values())
    assert plan.planned_peak < everything / 2


def test_ranges_alive_together_never_overlap():
    """A synthetic schedule: a chain of planned steps, some results read much later, one
    written in place; every two groups alive at one step get disjoint ranges."""
    rng = np.random.default_rng(1)
    n = 60
    into, in_place = Into(None), Into(None, in_place=True)
    last_use = {i: min(n - 1, i + 1 + int(rng.integers(0, 8))) for i in range(n)}
    sizes = {i: int(rng.integers(1, 50)) * 100 for i in range(n)}
    joined = {i for i in range(3, n, 7)}  # these write over their input, read last here
    for i in joined:
        sizes[i], last_use[i - 1] = sizes[i - 1], i
    steps = []
    for i in range(n):
        ins = (i - 1,) if i else ()
        free = tuple(s for s in range(n) if last_use[s] == i and s != i)
        steps.append(StepInfo(ins, (i,), free, sizes[i], in_place if i in joined else into))
    plan = plan_memory(steps, sizes, keep=set(), same_layout={(i, 0) for i in joined})
    assert len(plan.offsets) == n
    assert all(plan.offsets[i] == plan.offsets[i - 1] for i in joined)
    for a in range(n):
        for b in range(a + 1, n):
            if b <= last_use[a] and not (b in joined and a == b - 1):  # alive at one step
                ra = (plan.offsets[a], plan.offsets[a] + sizes[a])
                rb = (plan.offsets[b], plan.offsets[b] + sizes[b])
                assert ra[1] <= rb[0] or rb[1] <= ra[0], (a, b)
    assert max(sizes.values()) <= plan.arena_bytes < sum(sizes.values()) + 64 * n
