"""Graph passes keep the numbers and do what they say: DCE, CSE, constant folding."""

from __future__ import annotations

import numpy as np

import tgraph as tg
from tgraph import builder as tb
from tgraph.passes import cse, dce, fold_constants, fold_layout, optimize


def graph_with_waste():
    g = tg.Graph("waste")
    x = g.input("x", ("B", 4), "float32")
    w = g.param("w", (4, 4))
    a = tb.tanh(x @ w)
    b = tb.tanh(x @ w)  # same as a
    two = g.const(np.float32(1)) + g.const(np.float32(1))  # foldable
    tb.exp(x)  # dead
    g.set_output("y", (a + b) * two)
    return g


def test_optimize_keeps_outputs_and_removes_waste():
    g = graph_with_waste()
    opt, report = optimize(g)
    assert report == {"merge_heads": 0, "dce": 1, "fold_constants": 1, "cse": 2, "fold_layout": 0}
    assert [n.op for n in opt.nodes] == ["matmul", "tanh", "add", "mul"]
    assert len(g.nodes) == 8  # the input graph is untouched
    params = tg.init_params(g, 0)
    x = {"x": np.random.default_rng(0).standard_normal((3, 4)).astype("float32")}
    np.testing.assert_allclose(tg.run(opt, x, params)["y"], tg.run(g, x, params)["y"], rtol=1e-6)


def test_each_pass_alone():
    g = graph_with_waste()
    assert dce(g) == 1 and dce(g) == 0
    assert fold_constants(g) == 1
    assert g.consts[-1].data == 2
    assert cse(g) == 2 and cse(g) == 0
    g.validate()


def test_fold_layout_makes_stacked_and_spread_biases_one_concat():
    """Three head biases [4] reshaped to [1, 1, 4], stacked [3, 1, 4], reshaped to
    [1, 3, 1, 4], their size-1 axes transposed and flattened to [12] (merge_heads then
    bias_before_heads): the same numbers as one concat of the three. A transpose that moves
    a real axis stays."""
    g = tg.Graph("biases")
    x = g.input("x", ("B", 12), "float64")
    bs = [g.param(f"b{i}", (4,), "float64") for i in range(3)]
    stacked = tb.concat(*[tb.reshape(b, [1, 1, 4]) for b in bs], axis=0)
    spread = tb.transpose(tb.reshape(stacked, [1, 3, 1, 4]), [0, 2, 1, 3])
    g.set_output("y", x + tb.reshape(spread, [12]))
    g.set_output("t", tb.transpose(tb.reshape(x, ["B", 3, 4]), [0, 2, 1]))
    rng = np.random.default_rng(1)
    params = {b.name: rng.standard_normal(4) for b in bs}
    feeds = {"x": rng.standard_normal((2, 12))}
    want = tg.run(g, feeds, params)
    assert fold_layout(g) > 0
    g.validate()
    assert [n.op for n in g.nodes] == ["concat", "add", "reshape", "transpose"]
    assert [v.name for v in g.nodes[0].inputs] == ["b0", "b1", "b2"]
    got = tg.run(g, feeds, params)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])
    assert fold_layout(g) == 0
