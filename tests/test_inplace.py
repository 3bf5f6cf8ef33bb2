"""The executor writes a result into an input that dies at that step, only when nothing else
holds that array, and the numbers do not change."""

from __future__ import annotations

import dataclasses

import numpy as np

import tgraph as tg
from tgraph import builder as tb
from tgraph.passes import optimize


def spied(ex):
    used = []
    for st in ex.steps:
        if st.into:
            st.into = dataclasses.replace(st.into, fn=lambda out, *a, f=st.into.fn,
                                          op=st.node.op: used.append(op) or f(out, *a))
    return used


def test_a_dying_intermediate_takes_the_result():
    g = tg.Graph("chain")
    x = g.input("x", (4, 5), "float64")
    g.set_output("y", (tb.exp(x) + 1.0) * 2.0)
    ex = tg.Executable(g)
    used = spied(ex)
    x_ = np.random.default_rng(0).standard_normal((4, 5))
    y = ex.run({"x": x_})["y"]
    assert used == ["add", "mul"]
    np.testing.assert_array_equal(y, (np.exp(x_) + 1.0) * 2.0)
    np.testing.assert_array_equal(x_, np.random.default_rng(0).standard_normal((4, 5)))


def test_a_live_view_or_a_leaf_is_never_overwritten():
    g = tg.Graph("view")
    x = g.input("x", (4, 5), "float64")
    e = tb.exp(x)
    g.set_output("flat", tb.reshape(e, [20]))  # a view of e, alive to the end
    g.set_output("y", e + 1.0)
    g.set_output("z", x * 3.0)  # x is a feed: never a target
    ex = tg.Executable(g)
    used = spied(ex)
    x_ = np.random.default_rng(1).standard_normal((4, 5))
    keep = x_.copy()
    out = ex.run({"x": x_})
    assert used == []
    np.testing.assert_array_equal(out["flat"], np.exp(keep).ravel())
    np.testing.assert_array_equal(out["y"], np.exp(keep) + 1.0)
    np.testing.assert_array_equal(x_, keep)


def test_fused_kernels_written_in_place_equal_fresh_outputs():
    g = tg.Graph("fused")
    x = g.input("x", (64, 600), "float32")
    w = g.param("w", (600, 600), "float32")
    b = g.param("b", (600,), "float32")
    m = x @ w  # dies in the fused node that reads it
    g.set_output("y", tb.tanh(m + b) * m)
    fast = optimize(g, 2)[0]
    assert [n.op for n in fast.nodes] == ["matmul", "fused"]
    ex, fresh = tg.Executable(fast), tg.Executable(fast)
    for st in fresh.steps:
        st.reuse = ()
    used = spied(ex)
    rng = np.random.default_rng(2)
    feeds = {"x": rng.standard_normal((64, 600), dtype=np.float32)}
    params = {"w": rng.standard_normal((600, 600), dtype=np.float32) / 30,
              "b": rng.standard_normal(600, dtype=np.float32)}
    got = ex.run(feeds, params)["y"]
    assert used == ["fused"]
    np.testing.assert_array_equal(got, fresh.run(feeds, params)["y"])
