"""grad() as a graph transformation: gradients of small graphs vs PyTorch autograd, the
shape of the result (scopes, saved activations, pruning), errors, and a Hessian-vector
product (grad of a grad graph) vs finite differences."""

from __future__ import annotations

import posixpath

import numpy as np
import pytest
import torch

import tgraph as tg
from tgraph import builder as tb
from tgraph.autodiff import grad
from tgraph.errors import NoGradientError, TGraphError
from tgraph.ops.registry import OpDef, register_op, unregister_op

rng = np.random.default_rng(0)
D = 6


def residual_block() -> tg.Graph:
    """x → LN → matmul + bias (broadcast) → GELU → matmul, added back to x (fan-out), then
    an attention-like softmax over a causal mask, and cross-entropy against int targets."""
    g = tg.Graph("block")
    x = g.input("x", ("B", "T", D), "float64")
    targets = g.input("targets", ("B", "T"), "int64")
    with g.scope("mlp"):
        h = tb.layernorm(x, g.param("ln_g", (D,), "float64"), g.param("ln_b", (D,), "float64"))
        h = tb.gelu(tb.linear(h, g.param("w1", (D, 2 * D), "float64"),
                              g.param("b1", (2 * D,), "float64")))
        x = x + tb.matmul(h, g.param("w2", (2 * D, D), "float64"))
    with g.scope("mix"):
        s = tb.scale(tb.matmul(x, tb.transpose(x, (0, 2, 1))), D ** -0.5)
        x = x + tb.matmul(tb.softmax(tb.mask(s, causal=True)), x)
    logits = tb.matmul(x, g.param("w_out", (D, 5), "float64"))
    g.set_output("logits", logits)
    g.set_output("loss", tb.cross_entropy(logits, targets))
    return g


def torch_block(p, x, targets):
    h = torch.nn.functional.layer_norm(x, (D,), p["mlp/ln_g"], p["mlp/ln_b"])
    x = x + torch.nn.functional.gelu(h @ p["mlp/w1"] + p["mlp/b1"]) @ p["mlp/w2"]
    s = (x @ x.transpose(1, 2)) * D ** -0.5
    causal = torch.ones(s.shape[-2:], dtype=torch.bool).tril()
    x = x + torch.softmax(s.masked_fill(~causal, float("-inf")), -1) @ x
    logits = x @ p["w_out"]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, 5), targets.reshape(-1))


def feeds_and_params(g):
    feeds = {"x": rng.standard_normal((2, 4, D)), "targets": rng.integers(0, 5, (2, 4))}
    params = {k: rng.standard_normal(a.shape) * 0.5 for k, a in tg.init_params(g).items()}
    return feeds, params


def test_gradients_match_torch_autograd():
    g = residual_block()
    feeds, params = feeds_and_params(g)
    gg = grad(g, "loss", wrt=[*params, "x"])
    out = tg.run(gg, feeds, params)

    tp = {k: torch.tensor(a, requires_grad=True) for k, a in params.items()}
    tx = torch.tensor(feeds["x"], requires_grad=True)
    loss = torch_block(tp, tx, torch.tensor(feeds["targets"]))
    loss.backward()
    np.testing.assert_allclose(out["loss"], loss.item(), rtol=1e-12)
    for k, t in tp.items():
        np.testing.assert_allclose(out[f"grad/{k}"], t.grad.numpy(), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(out["grad/x"], tx.grad.numpy(), rtol=1e-6, atol=1e-12)


def test_result_keeps_forward_outputs_and_names_gradients_after_params():
    g = residual_block()
    gg = grad(g, "loss")
    assert set(gg.outputs) == {"logits", "loss"} | {f"grad/{p.name}" for p in g.params}
    assert gg.meta["grad"]["wrt"]["mlp/w1"] == "grad/mlp/w1"
    assert len(g.nodes) < len(gg.nodes) and "grad/mlp/w1" not in g.outputs  # a new graph


def test_backward_nodes_are_scoped_and_point_at_their_forward_node():
    g = residual_block()
    gg = grad(g, "loss")
    forward = {n.name: n for n in g.nodes}
    backward = [n for n in gg.nodes if n.name not in forward]
    assert backward
    users = g.users()
    values = {v.name: v for v in g.values()}
    sums = [n for n in backward if "sums" in n.meta]
    # the only fan-out on a path from a parameter: the MLP's residual output, read four times
    # in "mix"; its gradient is summed there, not in "mlp" where it was produced
    assert {(n.meta["sums"], n.scope) for n in sums} == {("mlp/add_1", "backward/mix")}
    for n in sums:  # a fan-out sum sits in the innermost scope holding every use
        uses = [u.scope for u in users[values[n.meta["sums"]]]]
        assert n.scope == "/".join(filter(None, ("backward", posixpath.commonpath(uses))))
    for n in backward:
        if n in sums:
            continue
        origin = n.meta["forward"]
        scope = forward[origin].scope if origin in forward else origin.rpartition("/")[0]
        assert n.scope == "/".join(filter(None, ("backward", scope))), (n, origin)
    # saved activations: forward values read by backward nodes
    forward_values = {v.name for n in g.nodes for v in n.outputs}
    saved = {v.name for n in backward for v in n.inputs if v.name in forward_values}
    assert "mlp/gelu" in saved or any(s.startswith("mlp/") for s in saved)


def test_only_what_leads_to_wrt_is_differentiated():
    g = residual_block()
    gg = grad(g, "loss", wrt=["w_out"])
    origins = {n.meta["forward"] for n in gg.nodes if "forward" in n.meta}
    assert origins and all(not o.startswith("mlp/") for o in origins)
    assert set(gg.outputs) == {"logits", "loss", "grad/w_out"}


def test_fan_out_contributions_are_summed():
    g = tg.Graph("fan")
    x = g.input("x", (3,), "float64")
    g.set_output("y", tb.sum(x * x + tb.exp(x) + x))
    x0 = rng.standard_normal(3)
    out = tg.run(grad(g, "y", wrt=["x"]), {"x": x0})
    np.testing.assert_allclose(out["grad/x"], 2 * x0 + np.exp(x0) + 1, rtol=1e-12)


def test_int_inputs_get_no_gradient_and_cannot_be_asked_for():
    g = residual_block()
    gg = grad(g, "loss", wrt=["mlp/w1"])
    assert not any(k.endswith("targets") for k in gg.outputs)
    with pytest.raises(TGraphError, match="only float values"):
        grad(g, "loss", wrt=["targets"])


def test_gather_gradient_adds_rows_of_repeated_indices():
    g = tg.Graph("emb")
    table = g.param("table", (4, 2), "float64")
    idx = g.input("idx", (3,), "int64")
    weights = g.const(np.arange(6.0).reshape(3, 2), dtype="float64")
    g.set_output("loss", tb.sum(tb.gather(table, idx) * weights))
    out = tg.run(grad(g, "loss"), {"idx": np.array([1, 3, 1])}, {"table": np.zeros((4, 2))})
    np.testing.assert_array_equal(out["grad/table"], [[0, 0], [4, 6], [0, 0], [2, 3]])


def test_an_unreachable_wrt_gets_zeros():
    g = tg.Graph("two")
    a, b = g.param("a", (2,), "float64"), g.param("b", (2,), "float64")
    g.set_output("loss", tb.sum(a * a))
    g.set_output("other", b)
    gg = grad(g, "loss", wrt=["a", "b"])
    out = tg.run(gg, {}, {"a": np.ones(2), "b": np.ones(2)})
    np.testing.assert_array_equal(out["grad/b"], 0)
    assert "grad/b" not in grad(g, "loss").outputs  # by default: params the loss uses


def test_errors_name_the_problem():
    g = residual_block()
    with pytest.raises(TGraphError, match="float scalar"):
        grad(g, "logits")
    with pytest.raises(TGraphError, match="no value named 'nope'"):
        grad(g, "loss", wrt=["nope"])

    class Opaque(OpDef):
        name = "opaque_test_op"

        def infer(self, types):
            return types[0]

        def kernel(self, xp, x):
            return x

    register_op(Opaque)
    try:
        h = tg.Graph("h")
        with h.scope("blk"):
            y = h.apply("opaque_test_op", [h.param("w", (2,), "float64")])
        h.set_output("loss", tb.sum(y))
        with pytest.raises(NoGradientError, match="opaque_test_op node 'blk/opaque_test_op'"):
            grad(h, "loss")
    finally:
        unregister_op("opaque_test_op")


def test_gradient_graph_round_trips_through_a_file(tmp_path):
    g = residual_block()
    feeds, params = feeds_and_params(g)
    gg = grad(g, "loss")
    tg.save_graph(gg, tmp_path / "fb.json")
    back = tg.load_graph(tmp_path / "fb.json")
    a, b = tg.run(gg, feeds, params), tg.run(back, feeds, params)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_hessian_vector_product_of_a_grad_graph_matches_finite_differences():
    """grad of a graph that already has a backward part: Hv = d/dx (∇f(x) · v)."""
    g = tg.Graph("f")
    x = g.input("x", (3, 4), "float64")
    w = g.const(rng.standard_normal((4, 4)), "w", "float64")
    h = tb.softmax(tb.tanh(tb.matmul(x, w)) * x, -1)
    y = tb.layernorm(h, g.const(np.full(4, 1.5), "gamma", "float64"),
                     g.const(np.zeros(4), "beta", "float64"))
    g.set_output("f", tb.sum(y * y))
    g1 = grad(g, "f", wrt=["x"])
    v = g1.input("v", (3, 4), "float64")
    g1.set_output("gv", tb.sum(g1.outputs["grad/x"] * v))
    g2 = grad(g1, "gv", wrt=["x"], prefix="hvp")
    assert any(n.scope.startswith("backward/backward") for n in g2.nodes)

    x0, v0 = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    hv = tg.run(g2, {"x": x0, "v": v0})["hvp/x"]
    ex = tg.Executable(g1)
    eps = 1e-5
    plus = ex.run({"x": x0 + eps * v0, "v": v0})["grad/x"]
    minus = ex.run({"x": x0 - eps * v0, "v": v0})["grad/x"]
    np.testing.assert_allclose(hv, (plus - minus) / (2 * eps), rtol=1e-6, atol=1e-8)
