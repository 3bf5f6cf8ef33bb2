"""The executor: same numbers as direct NumPy, buffers freed at last use, symbolic dims
bound from feeds, and clear errors for bad feeds and weights."""

from __future__ import annotations

import dataclasses
import weakref

import numpy as np
import pytest

import tgraph as tg
from tgraph import builder as tb
from tgraph.errors import FeedError, TGraphError
from tgraph.execute import Executable, live_bytes_peak
from tgraph.ir import Node

D = 8


def mlp_stack(n_layers=3):
    g = tg.Graph("mlp")
    x = g.input("x", ("B", "T", D), "float64")
    h = x
    for i in range(n_layers):
        with g.scope(f"layer_{i}"):
            w = g.param("w", (D, D), dtype="float64")
            b = g.param("b", (D,), dtype="float64")
            h = h + tb.relu(tb.matmul(h, w) + b)
    g.set_output("y", tb.softmax(h))
    return g


def numpy_mlp(x, params, n_layers=3):
    h = x
    for i in range(n_layers):
        h = h + np.maximum(h @ params[f"layer_{i}/w"] + params[f"layer_{i}/b"], 0)
    e = np.exp(h - h.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_results_equal_direct_numpy():
    g = mlp_stack()
    params = tg.init_params(g, seed=3)
    assert all(p.dtype == np.float64 for p in params.values())
    x = np.random.default_rng(1).standard_normal((2, 5, D))
    y = Executable(g, check=True).run({"x": x}, params)["y"]
    # the backend's softmax is one compiled loop that sums a row in its own order: the
    # same arithmetic up to that rounding (a few ulps of a float64 probability)
    np.testing.assert_allclose(y, numpy_mlp(x, params), rtol=8 * 2.0**-53, atol=0)


def test_one_graph_runs_at_several_batch_sizes_and_lengths():
    g = mlp_stack(1)
    ex = Executable(g, check=True)
    params = tg.init_params(g)
    for b, t in [(1, 1), (3, 7), (2, 16)]:
        x = np.ones((b, t, D))
        assert ex.run({"x": x}, params)["y"].shape == (b, t, D)


def test_each_intermediate_is_freed_right_after_its_last_use():
    g = mlp_stack()
    ex = Executable(g)
    step_of = {n: i for i, n in enumerate(g.nodes)}
    freed_at = {s: i for i, st in enumerate(ex.steps) for s in st.free}
    users = g.users()
    out = {id(v) for v in g.outputs.values()}
    for n in g.nodes:
        for v in n.outputs:
            slot = ex.slot[v]
            if id(v) in out:
                assert slot not in freed_at
            else:
                last = max(step_of[u] for u in users[v])
                assert freed_at[slot] == last, v.name
    leaves = {ex.slot[v] for v in (*g.inputs, *g.params, *g.consts)}
    assert not leaves & set(freed_at)


def test_peak_live_memory_is_far_below_the_sum_of_all_intermediates():
    g = mlp_stack(6)
    ex = Executable(g)
    env = {"B": 4, "T": 32}
    total = sum(4 * 32 * D * 8 for n in g.nodes for _ in n.outputs)
    assert live_bytes_peak(ex, env) <= 3 * 4 * 32 * D * 8 < total


def test_freed_arrays_are_really_released_during_the_run():
    """Weak references to each step's result die once the schedule frees the slot."""
    g = mlp_stack(3)
    ex = Executable(g, plan_memory=False)  # a planned result lives in the arena instead
    refs: dict[int, weakref.ref] = {}
    freed: list[int] = []
    checked = []

    def wrap(st, kernel):  # the step's kernel, or its kernel writing into a dying input
        def spy(*arrays):
            dead = [s for s in freed if refs[s]() is not None]
            checked.append(len(freed))
            assert not dead, f"slots {dead} still alive after being freed"
            out = kernel(*arrays)
            # a dying input whose array took the result lives on as the output's
            freed.extend(s for s in st.free if s not in refs or refs[s]() is not out)
            refs[st.outs[0]] = weakref.ref(out)
            return out
        return spy

    for st in ex.steps:
        st.kernel = wrap(st, st.kernel)
        if st.into is not None:
            st.into = dataclasses.replace(st.into, fn=wrap(st, st.into.fn))
    ex.run({"x": np.ones((1, 2, D))}, tg.init_params(g))
    assert max(checked) >= 5  # later steps really checked many freed buffers


def test_inconsistent_symbolic_dims_are_rejected():
    g = tg.Graph("two")
    a = g.input("a", ("B", "T"), "float32")
    b = g.input("b", ("B", "T"), "float32")
    g.set_output("y", a + b)
    with pytest.raises(FeedError, match=r"dim T is 4 here but 3"):
        tg.run(g, {"a": np.ones((2, 3), "float32"), "b": np.ones((2, 4), "float32")})


@pytest.mark.parametrize("feeds,msg", [
    ({}, "missing feed for graph input 'x'"),
    ({"x": np.ones((2, 3))}, "rank 3"),
    ({"x": np.ones((2, 3, D + 1))}, "expected 2×3×8"),
    ({"x": np.ones((2, 3, D), dtype=np.int64)}, "dtype int64, expected float64"),
    ({"x": np.ones((2, 3, D)), "y": np.ones(3)}, "has no input 'y'; its inputs: x"),
])
def test_bad_feeds_name_the_input_and_shapes(feeds, msg):
    g = mlp_stack(1)
    with pytest.raises(FeedError, match=msg):
        tg.run(g, feeds, tg.init_params(g))


def test_missing_or_misshapen_weights():
    g = mlp_stack(1)
    params = tg.init_params(g)
    x = {"x": np.ones((1, 2, D))}
    with pytest.raises(FeedError, match="missing parameter 'layer_0/b'"):
        tg.run(g, x, {k: v for k, v in params.items() if k != "layer_0/b"})
    with pytest.raises(FeedError, match="'layer_0/w' has shape 8×9"):
        tg.run(g, x, {**params, "layer_0/w": np.ones((D, D + 1))})


def test_validate_rejects_use_before_definition():
    g = mlp_stack(2)
    g.nodes.reverse()  # a broken order: every node now reads values defined later
    with pytest.raises(TGraphError, match="before it is defined"):
        g.validate()


def test_validate_rejects_types_the_shape_rule_disagrees_with():
    g = mlp_stack(1)
    node: Node = g.nodes[0]
    node.outputs[0].type = node.outputs[0].type.with_shape(("B", "T", 3))
    with pytest.raises(TGraphError, match="shape rule gives"):
        g.validate()


def test_init_params_is_reproducible_and_follows_specs():
    g = tg.Graph("p")
    g.param("w", (64, 64), init={"dist": "normal", "std": 0.5})
    g.param("z", (3,), init={"dist": "zeros"})
    g.param("o", (3,), init={"dist": "ones"})
    a, b = tg.init_params(g, 7), tg.init_params(g, 7)
    np.testing.assert_array_equal(a["w"], b["w"])
    assert abs(a["w"].std() - 0.5) < 0.02 and a["w"].dtype == np.float32
    assert (a["z"] == 0).all() and (a["o"] == 1).all()
    assert not np.array_equal(tg.init_params(g, 8)["w"], a["w"])


def test_data_the_types_cannot_rule_out_fails_naming_the_node():
    """A token id past the vocabulary, or T past a learned position table."""
    from tgraph.models import build_model

    g = build_model("gpt", preset="tiny", max_len=8, vocab=10)
    params = tg.init_params(g)
    for bad in (10, -1):  # -1 must not wrap to the last row
        with pytest.raises(FeedError, match=rf"feed 'tokens' holds id {bad}; ids must be in "
                                            r"\[0, 10\)"):
            tg.run(g, {"tokens": np.array([[1, 2, bad, 3]])}, params)
    with pytest.raises(FeedError, match=r"dim T=9 is more than this model's max_len=8"):
        tg.run(g, {"tokens": np.zeros((1, 9), np.int64)}, params)
    del g.meta["int_ranges"], g.meta["dim_limits"]  # a graph without hints: the kernel says
    for bad in (10, -1):
        with pytest.raises(FeedError, match=r"gather node 'embed/gather' .*int64\[1×4\].*"
                                            r"IndexError"):
            tg.run(g, {"tokens": np.array([[1, 2, bad, 3]])}, params)
