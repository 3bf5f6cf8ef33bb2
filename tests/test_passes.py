"""Graph passes keep the numbers and do what they say: DCE, CSE, constant folding."""

from __future__ import annotations

import numpy as np

import tgraph as tg
from tgraph import builder as tb
from tgraph.passes import cse, dce, fold_constants, optimize


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
    assert report == {"merge_heads": 0, "dce": 1, "fold_constants": 1, "cse": 2}
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
