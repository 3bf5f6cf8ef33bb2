"""Optimisation levels keep the numbers; fused kernels (Numba) match the unfused graph.

References are independent of the code under test: the -O0 graph (every primitive run by
its own NumPy kernel), a float64 evaluation for float32 kernels, and finite differences.
Tolerances: float64 graphs whose maths a pass does not change agree to rtol 1e-10 (a few
ulps of reassociation in merged heads and fused formulas); an output that is rounding
noise around zero (a key bias's gradient, zero in exact arithmetic) is held to the same
1e-10 relative to the largest gradient of the graph.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import tgraph as tg
from tgraph import builder as tb
from tgraph.autodiff import grad
from tgraph.errors import ShapeError
from tgraph.feeds import random_feeds
from tgraph.models import build_model
from tgraph.passes import fuse_elementwise, optimize, training_graph

SMALL = dict(n_layers=1, d_model=16, n_heads=2, d_ff=32, max_len=8)


def close(got: dict, want: dict, rtol: float) -> None:
    scale = max(float(np.max(np.abs(a))) for a in want.values() if a.size)
    for k, a in want.items():
        np.testing.assert_allclose(got[k], a, rtol=rtol, atol=rtol * scale, err_msg=k)


@pytest.mark.parametrize("model,kw", [
    ("gpt", {**SMALL, "vocab": 11}),
    ("gpt", {**SMALL, "vocab": 11, "norm": "pre"}),  # the residual's add in LayerNorm′
    ("bert", {**SMALL, "vocab": 11}),
    ("transformer", {**SMALL, "vocab": 11, "n_enc_layers": 1, "n_dec_layers": 1}),
])
def test_every_level_keeps_forward_and_gradients_float64(model, kw):
    g = build_model(model, loss=True, dtype="float64", **kw)
    params, feeds = tg.init_params(g, 0), random_feeds(g, {"B": 2, "T": 8, "S": 8}, 0)
    ref = tg.run(training_graph(g, "loss", 0), feeds, params)
    for level in (1, 2):
        fb = training_graph(g, "loss", level)
        if level == 2:
            assert any(n.op == "fused" for n in fb.nodes)
        close(tg.run(fb, feeds, params), ref, 1e-10)
        fwd, _ = optimize(g, level)
        close(tg.run(fwd, feeds, params), tg.run(g, feeds, params), 1e-10)


def test_gradient_flows_through_fused_nodes():
    """grad of an -O2 forward graph differentiates each fused node's body."""
    g = build_model("gpt", loss=True, dtype="float64", vocab=11, **SMALL)
    fast, report = optimize(g, 2)
    assert report["fuse_elementwise"] > 0
    params, feeds = tg.init_params(g, 1), random_feeds(g, {"B": 2, "T": 8}, 1)
    close(tg.run(grad(fast, "loss"), feeds, params), tg.run(grad(g, "loss"), feeds, params),
          1e-10)


def chain_graph(dtype):
    """bias + GELU, a per-row statistic broadcast back, a comparison feeding where, a scalar."""
    g = tg.Graph("chain")
    x = g.input("x", ("B", "T", 6), dtype)
    b = g.param("b", (6,), dtype)
    h = tb.gelu(x + b)
    m = tb.mean(h, [-1], keepdims=True)
    y = tb.where(tb.compare(h, m, ">"), tb.tanh(h - m) * 3.0, tb.exp(h * -0.5))
    g.set_output("y", y)
    g.set_output("h", h)
    return g


def test_fusion_groups_chains_with_a_trailing_row_reduction():
    fast, _ = optimize(chain_graph("float32"), 2)
    fused = [n for n in fast.nodes if n.op == "fused"]
    assert [[e["op"] for e in n.attrs["body"]] for n in fused] == [
        ["add", "gelu", "mean", "mul", "exp"], ["compare", "sub", "tanh", "mul", "where"]]
    assert [n.op for n in fast.nodes] == ["fused", "fused"]  # the row mean is computed in
    # the first loop; the second reads it, so it could not be in the first
    # scalars are inlined into the body, not inputs
    assert {"value": 3.0, "dtype": "float32"} in fused[1].attrs["body"][3]["args"]


@pytest.mark.parametrize("shape", [(2, 3), (3, 2000)])  # serial, and split over threads
def test_fused_kernel_float32_against_float64(shape):
    g32, g64 = chain_graph("float32"), chain_graph("float64")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((*shape, 6)) * 3
    b = rng.standard_normal(6)
    want = tg.run(g64, {"x": x}, {"b": b})
    fast = optimize(g32, 2)[0]
    got = tg.run(fast, {"x": x.astype("float32")}, {"b": b.astype("float32")})
    for k in want:  # float32 rounding of inputs and result, through a few ops: 1e-4
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-6, err_msg=k)


def test_no_cycle_when_an_input_depends_on_the_group():
    g = tg.Graph("diamond")
    x = g.input("x", (4, 4), "float64")
    w = g.param("w", (4, 4), "float64")
    y = tb.exp(x)  # fusible
    z = y @ w  # not fusible, reads y
    g.set_output("out", tb.tanh(y + z))  # must not join exp's group: z depends on it
    fast, _ = optimize(g, 2)
    ops = [n.op for n in fast.nodes]
    assert ops.index("matmul") < max(i for i, op in enumerate(ops) if op == "fused")
    x_, w_ = np.random.default_rng(0).standard_normal((2, 4, 4))
    np.testing.assert_allclose(tg.run(fast, {"x": x_}, {"w": w_})["out"],
                               np.tanh(np.exp(x_) + np.exp(x_) @ w_), rtol=1e-12)


def test_fused_graph_saves_loads_and_finite_differences(tmp_path):
    g = chain_graph("float64")
    fast = optimize(g, 2)[0]
    tg.save_graph(fast, tmp_path / "f.json")
    back = tg.load_graph(tmp_path / "f.json")
    rng = np.random.default_rng(2)
    x, b = rng.standard_normal((2, 3, 6)), rng.standard_normal(6)
    np.testing.assert_array_equal(tg.run(back, {"x": x}, {"b": b})["y"],
                                  tg.run(fast, {"x": x}, {"b": b})["y"])
    back.set_output("loss", tb.sum(tb.sum(back.outputs["y"], [0, 1, 2]) * 1.0, []))
    gb = grad(back, "loss", wrt=["b"])
    analytic = tg.run(gb, {"x": x}, {"b": b})["grad/b"]
    eps, fd = 1e-6, np.zeros(6)
    for i in range(6):
        d = np.zeros(6)
        d[i] = eps
        fd[i] = (tg.run(back, {"x": x}, {"b": b + d})["loss"]
                 - tg.run(back, {"x": x}, {"b": b - d})["loss"]) / (2 * eps)
    np.testing.assert_allclose(analytic, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("body,message", [
    ([{"op": "no_such_op", "args": [0], "attrs": {}}], "unknown op"),
    ([{"op": "exp", "args": [5], "attrs": {}}], "refers to nothing"),
    ([{"op": "add", "args": [0, {"value": "__import__('os')", "dtype": "float32"}],
       "attrs": {}}], "number value"),
])
def test_a_hostile_fused_body_is_a_clear_error(tmp_path, body, message):
    from tgraph.errors import TGraphError

    g = chain_graph("float32")
    fast = optimize(g, 2)[0]
    path = tmp_path / "f.json"
    tg.save_graph(fast, path)
    doc = json.loads(path.read_text())
    for n in doc["nodes"]:
        if n["op"] == "fused":
            n["attrs"]["body"] = body
            n["attrs"]["outputs"] = [1]
            break
    path.write_text(json.dumps(doc))
    with pytest.raises((ShapeError, TGraphError), match=message):
        tg.load_graph(path)


def test_fuse_pass_reports_nothing_on_a_graph_without_chains():
    g = tg.Graph("mm")
    x = g.input("x", (2, 2), "float32")
    g.set_output("y", x @ x)
    assert fuse_elementwise(g) == 0


CACHE_PROBE = """
import sys, numpy as np, tgraph as tg
from tgraph import builder as tb
from tgraph.passes import optimize
from tgraph.codegen.numba_cpu import _LOADED
g = tg.Graph("c"); x = g.input("x", (4, 5), "float64")
g.set_output("y", tb.tanh(tb.exp(x) * 0.25 + 1.0))
tg.run(optimize(g, 2)[0], {"x": np.ones((4, 5))})
(module,) = _LOADED.values()
print(module.entry.cache_hits)
"""


def test_a_second_process_loads_compiled_kernels_from_the_disk_cache(tmp_path):
    env = {"TGRAPH_CACHE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    runs = [subprocess.run([sys.executable, "-c", CACHE_PROBE], env=env, capture_output=True,
                           text=True, check=True).stdout.split() for _ in range(2)]
    assert runs[0] == ["0"]  # compiled once
    assert runs[1] == ["1"]  # then only loaded
    assert len(list((tmp_path / "kernels").glob("fused_*.py"))) == 1


def test_a_fused_node_sits_in_the_deepest_scope_holding_all_its_members():
    g = tg.Graph("scopes")
    x = g.input("x", (3, 4), "float64")
    with g.scope("block/a"):
        y = tb.exp(x)
    with g.scope("block/b"):
        y = tb.tanh(y * 2.0)
    with g.scope("backward/block"):
        g.set_output("z", y + 1.0)
    fast = optimize(g, 2)[0]
    (fused,) = [n for n in fast.nodes if n.op == "fused"]
    assert fused.scope == ""  # forward and backward members: neither block owns it
    g2 = tg.Graph("inner")
    x = g2.input("x", (3, 4), "float64")
    with g2.scope("block/a"):
        y = tb.exp(x)
    with g2.scope("block/b"):
        g2.set_output("z", tb.tanh(y * 2.0))
    (fused,) = [n for n in optimize(g2, 2)[0].nodes if n.op == "fused"]
    assert fused.scope == "block"


def test_a_fused_node_is_drawn_as_a_block_of_its_ops_that_depth_opens(tmp_path):
    from tgraph.models import build_model
    from tgraph.render.api import render

    fast = optimize(build_model("gpt", preset="tiny", n_layers=1), 2)[0]
    assert any(n.op == "fused" for n in fast.nodes)
    render(fast, tmp_path / "open.dot")
    text = (tmp_path / "open.dot").read_text()
    assert "fused 1: + → GELU" in text and ">GELU<" in text  # the block and its ops
    assert ">+ b_o<" in text
    render(fast, tmp_path / "closed.dot", depth=3)  # blocks inside decoder/layer_0 closed
    closed = (tmp_path / "closed.dot").read_text()
    assert "fused 1: + → +" in closed and ">+ b_o<" not in closed


@pytest.mark.parametrize("window", [0, 2])
def test_attention_masks_fold_into_masked_softmax_and_keep_the_numbers(window):
    """-O2 runs scale+mask+softmax as one op: no mask op is left, the forward's 1/√d is the
    op's scale, and the two products go in too (one attention op). A training graph's
    attention is one op as well, that also returns its weights, differentiated as one
    attention_grad op that reads them: no masked_softmax or softmax_grad over [.., T, S] is
    left. Forward and gradients equal -O0's."""
    g = build_model("gpt", loss=True, dtype="float64", vocab=11, window=window, **SMALL)
    params, feeds = tg.init_params(g, 2), random_feeds(g, {"B": 2, "T": 8}, 2)
    fwd, report = optimize(g, 2)
    fb = training_graph(g, "loss", 2)
    assert report["fuse_masked_softmax"] == report["fuse_attention"] == SMALL["n_layers"]
    for graph, fused in ((fwd, ["attention"]), (fb, ["attention", "attention_grad"])):
        ops = [n.op for n in graph.nodes]
        assert not {"mask", "masked_softmax", "softmax_grad"} & set(ops)
        assert all(ops.count(op) == SMALL["n_layers"] for op in fused)
    d_head = SMALL["d_model"] // SMALL["n_heads"]
    scales = [n.attrs.get("scale") for n in fwd.nodes if n.op == "attention"]
    assert scales == pytest.approx([d_head ** -0.5] * SMALL["n_layers"])
    assert not any(n.attrs.get("weights") for n in fwd.nodes)
    kept = {id(n.outputs[1]) for n in fb.nodes if n.op == "attention" and n.attrs["weights"]}
    assert len(kept) == SMALL["n_layers"]
    assert {id(n.inputs[4]) for n in fb.nodes if n.op == "attention_grad"} == kept
    close(tg.run(fwd, feeds, params), tg.run(g, feeds, params), 1e-10)
    close(tg.run(fb, feeds, params), tg.run(training_graph(g, "loss", 0), feeds, params), 1e-10)


def _computes(node, op: str) -> list[int]:
    """Indices into a fused node's outputs of the values its body computes with ``op``."""
    first = len(node.inputs)
    made = {first + i for i, step in enumerate(node.attrs["body"]) if step["op"] == op}
    return [k for k, at in enumerate(node.attrs["outputs"]) if at in made]


@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh"])
def test_exact_gelus_gradient_reads_the_cdf_its_forward_wrote(activation):
    """A training graph at -O2 writes exact GELU as x·Φ(x): the forward loop writes Φ, the
    backward loop reads it (no gelu_grad, and Φ computed once), and no gradient term runs in
    the forward loop (exp(−x²/2) is the backward's). The tanh form keeps its gelu_grad.
    Gradients equal -O0's."""
    g = build_model("gpt", loss=True, dtype="float64", vocab=11, activation=activation,
                    **SMALL)
    params, feeds = tg.init_params(g, 3), random_feeds(g, {"B": 2, "T": 8}, 3)
    fb = training_graph(g, "loss", 2)
    fused = [n for n in fb.nodes if n.op == "fused"]
    bodies = [step["op"] for n in fused for step in n.attrs["body"]]
    if activation == "gelu":
        assert "gelu_grad" not in bodies and bodies.count("ndtr") == SMALL["n_layers"]
        (forward,) = [n for n in fused if _computes(n, "ndtr")]
        assert not {"exp"} & {step["op"] for step in forward.attrs["body"]}
        cdf = forward.outputs[_computes(forward, "ndtr")[0]]
        assert any(cdf in n.inputs and n.name.startswith("backward/") for n in fused)
    else:
        assert "ndtr" not in bodies and bodies.count("gelu_grad") == SMALL["n_layers"]
    close(tg.run(fb, feeds, params), tg.run(training_graph(g, "loss", 0), feeds, params), 1e-10)


def test_a_padding_mask_stays_a_mask_op():
    """A mask with a keep input (BERT's padding) is not a pattern the fused op knows."""
    g = build_model("bert", loss=True, vocab=11, **SMALL)
    fwd, report = optimize(g, 2)
    assert report["fuse_masked_softmax"] == 0
    assert any(n.op == "mask" and len(n.inputs) == 2 for n in fwd.nodes)


def is_add(n) -> bool:
    """An add, or a fused node that is one add (a bias add runs as a two-thread loop)."""
    return n.op == "add" or (n.op == "fused" and [e["op"] for e in n.attrs["body"]] == ["add"])


@pytest.mark.parametrize("tied", [True, False])
def test_a_tied_embeddings_sparse_gradient_is_added_onto_its_dense_one(tied):
    """-O2: add(head's dense gradient, scatter_add(rows)) becomes scatter_add onto it; an
    untied table has no sum to take it in. Gradients equal -O0's either way."""
    g = build_model("gpt", loss=True, dtype="float64", vocab=11, tie_embeddings=tied, **SMALL)
    params, feeds = tg.init_params(g, 3), random_feeds(g, {"B": 2, "T": 8}, 3)
    fb = training_graph(g, "loss", 2)
    onto = [n for n in fb.nodes if n.op == "scatter_add" and len(n.inputs) == 3]
    assert len(onto) == (1 if tied else 0)
    assert not any(is_add(n) and any(v.node is not None and v.node.op == "scatter_add"
                                         for v in n.inputs) for n in fb.nodes)
    close(tg.run(fb, feeds, params), tg.run(training_graph(g, "loss", 0), feeds, params), 1e-10)


def test_a_transposed_product_comes_out_in_its_readers_layout():
    """-O2: (aᵀ·b)ᵀ is computed as bᵀ·a, a contiguous result where it was a strided view
    (a tied head's weight gradient); the numbers are -O0's."""
    g = tg.Graph("t")
    a, b = g.input("a", ("N", 5), "float64"), g.input("b", ("N", 3), "float64")
    y = tb.transpose(tb.transpose(a, [1, 0]) @ b, [1, 0])
    g.set_output("y", y)
    fast, report = optimize(g, 2)
    assert report["transpose_products"] == 1
    assert [n.op for n in fast.nodes] == ["transpose", "matmul"]
    rng = np.random.default_rng(8)
    feeds = {"a": rng.standard_normal((7, 5)), "b": rng.standard_normal((7, 3))}
    got = tg.run(fast, feeds)["y"]
    np.testing.assert_allclose(got, tg.run(g, feeds)["y"], rtol=1e-12)
    assert got.flags.c_contiguous and got.shape == (3, 5)


def test_cold_kernels_are_shared_with_a_helper_process(tmp_path, monkeypatch):
    """With an empty cache, a share of the distinct kernels is compiled by a helper process
    into the same disk cache: afterwards every fused loop is cached, the helper was started
    once, and the Executable computes what -O0 does."""
    from tgraph.backends.numpy_backend import NumpyBackend
    from tgraph.codegen import ahead
    from tgraph.codegen.numba_cpu import FusedKernel, is_cached

    monkeypatch.setenv("TGRAPH_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(ahead, "MIN_COLD", 2)
    started = []
    popen = subprocess.Popen
    monkeypatch.setattr(ahead.subprocess, "Popen",
                        lambda *a, **k: started.append(a) or popen(*a, **k))
    g = build_model("gpt", loss=True, vocab=11, activation="gelu_tanh", **SMALL)
    fb = training_graph(g, "loss", 2)
    fused = [n for n in fb.nodes if n.op == "fused"]
    assert sum(not is_cached(FusedKernel(n).key()) for n in fused) >= 2
    backend = NumpyBackend()
    ahead.compile_ahead(backend, fb.nodes)  # this process's half, then the helper's
    assert len(started) == 1 and all(is_cached(FusedKernel(n).key()) for n in fused)
    ex = tg.Executable(fb, backend)  # loads: nothing cold is left, no second helper
    assert len(started) == 1
    params, feeds = tg.init_params(g, 4), random_feeds(g, {"B": 2, "T": 8}, 4)
    close(ex.run(feeds, params), tg.run(training_graph(g, "loss", 0), feeds, params), 1e-4)


def test_cold_kernels_are_shared_by_estimated_compile_time():
    """Longest first, each to the process that would finish sooner, the helper starting
    HELPER_START_S behind: every kernel once, attention here, its gradient there, and the
    two shares' estimated ends within one small kernel of each other."""
    from types import SimpleNamespace

    from tgraph.codegen import ahead

    ops = ["matmul", "fused", "attention_grad", "layernorm", "fused", "concat", "attention",
           "cross_entropy", "fused", "layernorm_grad", "fused", "cross_entropy_grad"]
    nodes = [SimpleNamespace(op=op) for op in ops]
    mine, theirs = ahead._shares([[n] for n in nodes])
    assert sorted(map(id, mine + theirs)) == sorted(map(id, nodes))
    assert mine[0].op == "attention" and theirs[0].op == "attention_grad"
    ends = [sum(ahead.COST.get(n.op, 0.0) for n in mine),
            ahead.HELPER_START_S + sum(ahead.COST.get(n.op, 0.0) for n in theirs)]
    assert abs(ends[0] - ends[1]) <= max(ahead.COST[op] for op in ops[1:] if op in ahead.COST
                                         and op not in ("attention", "attention_grad"))


def test_nodes_compiling_one_kernel_go_to_one_process():
    """A training graph's variants of LayerNorm's gradient (with and without the residual
    and the sum of dx) compile one loop, and so do fused nodes of one canonical form: each
    such group lands whole in one share, so no loop is compiled by both processes."""
    from tgraph.codegen import ahead

    g = build_model("gpt", loss=True, vocab=11, **SMALL)
    fb = training_graph(g, "loss", 2)
    grads = [n for n in fb.nodes if n.op == "layernorm_grad"]
    assert len({(len(n.inputs), n.attrs.get("sum_dx")) for n in grads}) > 1
    assert len({ahead._compiles(n) for n in grads}) == 1
    groups: dict = {}
    for n in fb.nodes:
        groups.setdefault(ahead._compiles(n), []).append(n)
    mine, theirs = ahead._shares(list(groups.values()))
    assert len(mine) + len(theirs) == len(fb.nodes)
    for share, other in ((mine, theirs), (theirs, mine)):
        assert not {ahead._compiles(n) for n in share} & {ahead._compiles(n) for n in other}


@pytest.mark.parametrize("heads", ["batched", "split"])
def test_products_of_one_input_merge_into_one(heads):
    """Training graphs at -O2: x·w_q, x·w_k, x·w_v become one product with the weights side
    by side, split (heads merged first when split), with their biases added once when each
    has one; the backward mirrors it. Forward and gradients are -O0's."""
    from tgraph.passes.projections import merge_projections

    g = build_model("gpt", loss=True, dtype="float64", vocab=11, heads=heads, **SMALL)
    params, feeds = tg.init_params(g, 4), random_feeds(g, {"B": 2, "T": 8}, 4)
    fwd = optimize(g, 1)[0]
    assert merge_projections(fwd) == 2  # one layer: three products into one
    d = SMALL["d_model"]
    wide = [n for n in fwd.nodes if n.op == "matmul" and n.inputs[1].shape == (d, 3 * d)]
    assert len(wide) == 1
    biased = any(is_add(n) and n.inputs[0] is wide[0].output for n in fwd.nodes)
    assert biased == (heads == "batched")  # split heads add their biases per head
    close(tg.run(fwd.validate(), feeds, params), tg.run(g, feeds, params), 1e-10)
    fb = training_graph(g, "loss", 2)
    assert sum(n.op == "matmul" and (d, 3 * d) in (n.inputs[1].shape, n.output.shape)
               for n in fb.nodes) >= 2  # the forward product and its weight gradient
    wide_sum = [n for n in fb.nodes if is_add(n) and n.output.shape[-1] == 3 * d]
    assert len(wide_sum) == 1 and wide_sum[0].inputs[1].shape == (3 * d,)  # biases: once
    close(tg.run(fb, feeds, params), tg.run(training_graph(g, "loss", 0), feeds, params), 1e-10)
    # forward-only: merged where the weights are concatenated anyway (heads drawn one by
    # one), into one concat of the 3·H pieces; leaf weights are not copied
    o2 = optimize(g, 2)[0]
    assert any(n.op == "split" for n in o2.nodes) == (heads == "split")
    if heads == "split":
        concats = [n for n in o2.nodes if n.op == "concat" and n.output.shape == (d, 3 * d)]
        assert len(concats) == 1 and len(concats[0].inputs) == 3 * SMALL["n_heads"]
    close(tg.run(o2, feeds, params), tg.run(g, feeds, params), 1e-10)


def test_packed_weights_make_the_merged_concat_a_view():
    """pack_params lays the weights an -O2 graph concatenates every run (the heads'
    projections merged into one product) into one array each: the concat is then a view
    of it, holding the same values; the run's outputs are the unpacked run's bit for bit;
    the caller's arrays are left as they were and the packed ones take the graph's dtype."""
    from tgraph.ir import PARAM

    g = build_model("gpt", loss=True, vocab=11, **SMALL)
    params, feeds = tg.init_params(g, 4), random_feeds(g, {"B": 2, "T": 8}, 4)
    o2 = optimize(g, 2)[0]
    joins = [n for n in o2.nodes
             if n.op == "concat" and all(v.kind == PARAM for v in n.inputs)]
    assert joins
    given = {k: a.astype(np.float64) for k, a in params.items()}
    packed = tg.pack_params(o2, given)
    joined = {v.name for n in joins for v in n.inputs}
    assert all(given[k].dtype == np.float64 for k in given)
    assert all(packed[k].dtype == np.float32 for k in joined)
    assert all(packed[k] is given[k] for k in given if k not in joined)
    ex = tg.Executable(o2)
    seen = {}
    for _ in range(2):  # the second time, the concat knows its inputs
        out = ex.run(feeds, packed, observe=lambda n, outs: seen.update({n: outs[0]}))
    for n in joins:
        assert np.shares_memory(seen[n], packed[n.inputs[0].name])  # no copy
        np.testing.assert_array_equal(
            seen[n], np.concatenate([params[v.name] for v in n.inputs], n.attrs["axis"]))
    ref = ex.run(feeds, params)
    for k in ref:
        np.testing.assert_array_equal(out[k], ref[k])


def test_a_product_read_as_a_graph_output_keeps_its_value():
    from tgraph.passes.projections import merge_projections

    g = tg.Graph("p")
    x = g.input("x", ("N", 4), "float64")
    w1, w2 = g.param("w1", (4, 3), "float64"), g.param("w2", (4, 5), "float64")
    b = g.param("b", (3,), "float64")
    g.set_output("bare", x @ w1)
    g.set_output("biased", x @ w1 + b)
    g.set_output("other", x @ w2)
    params = tg.init_params(g, 1)
    feeds = {"x": np.random.default_rng(9).standard_normal((6, 4))}
    want = tg.run(g, feeds, params)
    assert merge_projections(g) == 2  # x·w1 twice (no CSE here) and x·w2: three into one
    close(tg.run(g.validate(), feeds, params), want, 1e-12)


def test_merged_heads_add_their_biases_before_the_heads_are_split_out():
    """-O2 on heads drawn one by one: after merge_heads, q, k and v get their stacked
    [H, 1, d] biases on a transposed [B, H, T, d] view; bias_before_heads adds them to the
    [B, T, D] product instead (one contiguous add each), and merged projections add the
    three once. Forward and gradients are -O0's."""
    g = build_model("gpt", loss=True, dtype="float64", vocab=11, heads="split", **SMALL)
    params, feeds = tg.init_params(g, 5), random_feeds(g, {"B": 2, "T": 8}, 5)
    fwd, report = optimize(g, 2)
    assert report["bias_before_heads"] == 3 * SMALL["n_layers"]
    d, h = SMALL["d_model"], SMALL["n_heads"]
    adds = [n for n in fwd.nodes if is_add(n) and "self_attn" in n.scope]
    assert not any(n.output.shape[-3:] == (h, "T", d // h) for n in adds)
    # then merge_projections adds them once, onto q, k and v's one product
    assert sum(n.output.shape == ("B", "T", 3 * d) for n in adds) == SMALL["n_layers"]
    close(tg.run(fwd, feeds, params), tg.run(g, feeds, params), 1e-10)
    close(tg.run(training_graph(g, "loss", 2), feeds, params),
          tg.run(training_graph(g, "loss", 0), feeds, params), 1e-10)


def test_a_lone_bias_add_is_fused_and_a_lone_add_of_equal_shapes_is_not():
    """NumPy adds a broadcast bias a row at a time on one core (~2.4x a two-thread loop at
    [1024, 768]); two arrays of one shape it adds as fast as a loop. Values unchanged."""
    g = tg.Graph("lone")
    x, y = g.input("x", ("N", 8), "float32"), g.input("y", ("N", 8), "float32")
    b = g.param("b", (8,), "float32")
    g.set_output("biased", x + b)
    g.set_output("summed", x + y)
    fast, _ = optimize(g, 2)
    ops = {name: v.node.op for name, v in fast.outputs.items()}
    assert ops == {"biased": "fused", "summed": "add"}
    rng = np.random.default_rng(2)
    feeds = {k: rng.standard_normal((5, 8)).astype(np.float32) for k in ("x", "y")}
    params = tg.init_params(g, 2)
    close(tg.run(fast, feeds, params), tg.run(g, feeds, params), 1e-7)


def test_a_float32_gelu_loop_vectorizes_with_its_math_inlined():
    """vecmath32's exp and Φ are plain jitted functions (not Numba-IR-inlined, which cost
    compile time): LLVM must still inline them into the loop and vectorize it. A call left
    in the loop, or scalar float code only, would run it 4-8x slower."""
    import re

    from tgraph.codegen.numba_cpu import FusedKernel, source

    g = tg.Graph("gelu")
    x, dy = g.input("x", (64, 256), "float32"), g.input("dy", (64, 256), "float32")
    g.set_output("out", g.apply("mul", [g.apply("gelu", [x]), dy]))
    fast, _ = optimize(g, 2)
    (node,) = fast.nodes
    kernel = FusedKernel(node)
    text = source(kernel.attrs, kernel.static_kinds(), kernel.ndim, kernel.mode, kernel.names)
    # compiled afresh here: a loop loaded from the disk cache shows no optimized IR
    namespace: dict = {}
    exec(compile(text.replace("cache=True", "cache=False"), "gelu_entry", "exec"), namespace)
    ir = namespace["entry"].inspect_llvm()
    lanes = {int(n) for n in re.findall(r"<(\d+) x float>", ir)}
    assert lanes and max(lanes) >= 4
    assert not re.search(r"call [^\n]*vecmath", ir)


def test_residual_gradients_add_inside_layernorm_grad():
    """A pre-norm block's x gets the gradient around the block plus LayerNorm's dx: at -O2
    the add is LayerNorm's gradient's fourth input (each block's two norms; the final norm
    has no residual around it), and the sum of dx over the leading axes (the bias gradient
    of the product before) its fourth result. The add is not folded where dx has another
    reader, or where another of the node's results is read before the add (the node would
    have to move past it)."""
    from tgraph.io import copy_graph
    from tgraph.passes.norm import residual_into_norm_grad

    g = build_model("gpt", loss=True, dtype="float64", vocab=11, **{**SMALL, "n_layers": 2})
    fb = training_graph(g, "loss", 2)
    norms = [n for n in fb.nodes if n.op == "layernorm_grad"]
    assert [len(n.inputs) for n in norms].count(4) == 4 and len(norms) == 5
    assert not any(n.op == "add" and any(v.node in norms for v in n.inputs) for n in fb.nodes)
    # each block's output projection and second product have a bias: dx's sum, in the loop;
    # the position table's gradient, summed over the batch alone, stays a sum
    assert sum(bool(n.attrs.get("sum_dx")) for n in norms) == 4
    assert [n.attrs["axes"] for n in fb.nodes
            if n.op == "sum" and n.inputs[0].node in norms] == [[0]]
    params, feeds = tg.init_params(g, 5), random_feeds(g, {"B": 2, "T": 8}, 5)
    close(tg.run(fb, feeds, params), tg.run(training_graph(g, "loss", 0), feeds, params), 1e-10)

    def norm_grad(reader_first=None, other_reader=False):
        gr = tg.Graph("norm")
        x, dy, r = (gr.input(k, (3, 5), "float64") for k in ("x", "dy", "r"))
        dx, dgamma, _ = tb.apply("layernorm_grad", x, gr.param("gamma", (5,), "float64"), dy)
        if reader_first is not None:
            gr.set_output("early", tb.exp(dgamma))
        if other_reader:
            gr.set_output("dx", tb.tanh(dx))
        gr.set_output("out", r + dx)
        return gr

    rng = np.random.default_rng(3)
    feeds = {k: rng.standard_normal((3, 5)) for k in ("x", "dy", "r")}
    params = {"gamma": rng.standard_normal(5)}
    assert residual_into_norm_grad(norm_grad(reader_first=True)) == 0
    assert residual_into_norm_grad(norm_grad(other_reader=True)) == 0
    plain = norm_grad()
    folded = copy_graph(plain)
    assert residual_into_norm_grad(folded) == 1
    assert [n.op for n in folded.validate().nodes] == ["layernorm_grad"]
    close(tg.run(folded, feeds, params), tg.run(plain, feeds, params), 1e-12)


@pytest.mark.parametrize("keepdims", [False, True])
def test_sum_of_layernorm_grad_dx_is_its_fourth_result(keepdims):
    """sum(dx) over the leading axes becomes layernorm_grad's sum_dx result, in the sum's
    shape (kept dims: reshaped), read by every reader of the sum; other sums stay."""
    from tgraph.io import copy_graph
    from tgraph.passes.norm import sums_into_norm_grad

    gr = tg.Graph("norm")
    x, dy = (gr.input(k, (2, 3, 5), "float64") for k in ("x", "dy"))
    dx, _, _ = tb.apply("layernorm_grad", x, gr.param("gamma", (5,), "float64"), dy)
    total = tb.sum(dx, [0, 1], keepdims=keepdims)
    gr.set_output("bias", tb.reshape(total, [5]))
    gr.set_output("scaled", total * 2.0)
    gr.set_output("rows", tb.sum(dx, [0]))  # not over every leading axis: stays a sum
    folded = copy_graph(gr)
    assert sums_into_norm_grad(folded) == 1
    norm = [n for n in folded.validate().nodes if n.op == "layernorm_grad"]
    assert len(norm) == 1 and norm[0].attrs["sum_dx"] and len(norm[0].outputs) == 4
    assert [n.op for n in folded.nodes].count("sum") == 1
    rng = np.random.default_rng(4)
    feeds = {k: rng.standard_normal((2, 3, 5)) for k in ("x", "dy")}
    params = {"gamma": rng.standard_normal(5)}
    close(tg.run(folded, feeds, params), tg.run(gr, feeds, params), 1e-12)
