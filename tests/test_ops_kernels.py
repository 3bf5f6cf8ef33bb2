"""Every primitive's kernel against PyTorch (or a closed form), run through a one-node graph
with the executor's shape check on, plus the shape errors each op must raise."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tgraph as tg
from tgraph.errors import ShapeError

rng = np.random.default_rng(0)


def randn(*shape, dtype="float64"):
    return rng.standard_normal(shape).astype(dtype)


def run_op(op, arrays, **attrs):
    """Build a graph holding one `op` node over inputs shaped like `arrays` and run it."""
    g = tg.Graph(op)
    ins = [g.input(f"x{i}", a.shape, str(a.dtype)) for i, a in enumerate(arrays)]
    out = g.apply(op, ins, attrs)
    outs = out if isinstance(out, tuple) else (out,)
    for i, v in enumerate(outs):
        g.set_output(f"y{i}", v)
    res = tg.Executable(g, check=True).run({f"x{i}": a for i, a in enumerate(arrays)})
    return [res[f"y{i}"] for i in range(len(outs))]


def t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def close(ours, ref, rtol=1e-10, atol=1e-12):
    np.testing.assert_allclose(ours, ref.numpy() if torch.is_tensor(ref) else ref,
                               rtol=rtol, atol=atol)


BINARY = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div,
          "maximum": torch.maximum}


@pytest.mark.parametrize("op", sorted(BINARY))
@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((2, 1, 4), (3, 1))])
def test_binary_broadcasting(op, shapes):
    a, b = randn(*shapes[0]), randn(*shapes[1]) + 3.0
    (y,) = run_op(op, [a, b])
    close(y, BINARY[op](t(a), t(b)))


def test_pow():
    a, b = np.abs(randn(3, 4)) + 0.1, randn(4)
    close(run_op("pow", [a, b])[0], torch.pow(t(a), t(b)))


UNARY = {
    "neg": (torch.neg, False), "exp": (torch.exp, False), "log": (torch.log, True),
    "sqrt": (torch.sqrt, True), "rsqrt": (torch.rsqrt, True), "tanh": (torch.tanh, False),
    "sin": (torch.sin, False), "cos": (torch.cos, False), "abs": (torch.abs, False),
    "relu": (torch.relu, False), "sigmoid": (torch.sigmoid, False),
}


@pytest.mark.parametrize("op", sorted(UNARY))
def test_unary(op):
    fn, positive = UNARY[op]
    a = randn(2, 3, 5)
    a = np.abs(a) + 0.1 if positive else a
    close(run_op(op, [a])[0], fn(t(a)))


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu(approximate):
    a = randn(4, 7) * 3
    close(run_op("gelu", [a], approximate=approximate)[0], F.gelu(t(a), approximate=approximate))


def test_float32_stays_float32():
    a = randn(3, 4, dtype="float32")
    for op in ("gelu", "exp", "rsqrt", "sigmoid"):
        assert run_op(op, [np.abs(a)])[0].dtype == np.float32


def test_where_and_cast():
    c = rng.random((3, 4)) > 0.5
    a, b = randn(3, 4), randn(4)
    close(run_op("where", [c, a, b])[0], torch.where(t(c), t(a), t(b)))
    (y,) = run_op("cast", [a], dtype="float32")
    assert y.dtype == np.float32 and np.allclose(y, a, rtol=1e-6)


@pytest.mark.parametrize("shapes", [((4, 5), (5, 3)), ((2, 4, 5), (5, 3)), ((2, 1, 4, 5), (3, 5, 6))])
def test_matmul_batched_broadcasting(shapes):
    a, b = randn(*shapes[0]), randn(*shapes[1])
    close(run_op("matmul", [a, b])[0], torch.matmul(t(a), t(b)))


@pytest.mark.parametrize("op,fn", [("sum", torch.sum), ("mean", torch.mean), ("max", torch.amax)])
@pytest.mark.parametrize("axes,keepdims", [(None, False), ([1], True), ([0, 2], False), ([-1], False)])
def test_reductions(op, fn, axes, keepdims):
    a = randn(2, 3, 4)
    ref = fn(t(a)) if axes is None else fn(t(a), dim=axes, keepdim=keepdims)
    if axes is None and keepdims:
        ref = ref.reshape(1, 1, 1)
    close(run_op(op, [a], axes=axes, keepdims=keepdims)[0], ref)


@pytest.mark.parametrize("axis", [-1, 1])
def test_softmax(axis):
    a = randn(2, 3, 4) * 10
    close(run_op("softmax", [a], axis=axis)[0], torch.softmax(t(a), dim=axis))


def test_fully_masked_softmax_row_is_zero_not_nan():
    keep = np.ones((1, 3, 4), dtype=bool)
    keep[0, 1] = False  # the second query may look at nothing
    (masked,) = run_op("mask", [randn(1, 3, 4), keep])
    (p,) = run_op("softmax", [masked])
    assert not np.isnan(p).any()
    np.testing.assert_array_equal(p[0, 1], 0)
    np.testing.assert_allclose(p[0, [0, 2]].sum(-1), 1)


def test_layernorm_matches_torch_and_decomposition():
    x, g, b = randn(2, 3, 8), randn(8), randn(8)
    (y,) = run_op("layernorm", [x, g, b], eps=1e-5)
    close(y, F.layer_norm(t(x), (8,), t(g), t(b), eps=1e-5), rtol=1e-9)

    graph = tg.Graph("ln")
    xv, gv, bv = (graph.input(n, a.shape, "float64") for n, a in (("x", x), ("g", g), ("b", b)))
    from tgraph import builder as tb

    graph.set_output("y", tb.layernorm(xv, gv, bv, decompose=True))
    assert {n.op for n in graph.nodes} >= {"mean", "sub", "mul", "rsqrt"}
    close(tg.run(graph, {"x": x, "g": g, "b": b})["y"], y, rtol=1e-9)


def test_cross_entropy():
    logits, targets = randn(2, 5, 7), rng.integers(0, 7, (2, 5))
    (y,) = run_op("cross_entropy", [logits, targets])
    close(y, F.cross_entropy(t(logits).reshape(-1, 7), t(targets).reshape(-1)))


def test_layout_ops():
    a = randn(2, 3, 4)
    close(run_op("reshape", [a], shape=[2, -1])[0], a.reshape(2, 12))
    close(run_op("transpose", [a], perm=[2, 0, 1])[0], a.transpose(2, 0, 1))
    close(run_op("concat", [a, a[:, :1]], axis=1)[0], np.concatenate([a, a[:, :1]], 1))
    parts = run_op("split", [a], axis=2, sizes=[1, 3])
    close(parts[0], a[..., :1]), close(parts[1], a[..., 1:])
    close(run_op("slice", [a], axis=1, start=1, stop=3)[0], a[:, 1:3])
    close(run_op("broadcast_to", [a[:, :1]], shape=[2, 3, 4])[0], np.broadcast_to(a[:, :1], a.shape))


def test_gather_one_hot_positions():
    table, idx = randn(10, 4), rng.integers(0, 10, (2, 3))
    close(run_op("gather", [table, idx])[0], F.embedding(t(idx), t(table)))
    close(run_op("one_hot", [idx], depth=10)[0], F.one_hot(t(idx), 10).float())
    close(run_op("positions", [randn(2, 5, 3)], axis=1)[0], np.arange(5.0))


def test_one_hot_times_matrix_equals_gather():
    """The teaching form of the embedding (seed 000): one-hot × matrix is the lookup."""
    table, idx = randn(6, 3), rng.integers(0, 6, (4,))
    (oh,) = run_op("one_hot", [idx], depth=6, dtype="float64")
    close(oh @ table, run_op("gather", [table, idx])[0])


@pytest.mark.parametrize("t_len,s_len,window", [(4, 4, 0), (3, 5, 0), (5, 5, 1)])
def test_causal_and_window_masks(t_len, s_len, window):
    scores = randn(2, t_len, s_len)
    (y,) = run_op("mask", [scores], causal=True, window=window)
    i = np.arange(t_len)[:, None] + s_len - t_len
    j = np.arange(s_len)[None, :]
    keep = (j <= i) & ((np.abs(j - i) <= window) if window else True)
    np.testing.assert_array_equal(np.isneginf(y), ~np.broadcast_to(keep, y.shape))
    np.testing.assert_array_equal(y[:, keep], scores[:, keep])


def test_padding_mask_broadcasts():
    scores = randn(2, 2, 3, 3)  # B, heads, T, S
    keep = np.array([[True, True, False], [True, True, True]])[:, None, None, :]
    (y,) = run_op("mask", [scores, keep], fill="-1e9")
    assert (y[0, ..., 2] == -1e9).all() and (y[1] == scores[1]).all()


BAD = [
    ("add", [(3, 4), (5,)], {}, "cannot broadcast 3×4 with 5"),
    ("matmul", [(3, 4), (5, 6)], {}, "inner dims differ"),
    ("matmul", [(4,), (4, 2)], {}, "rank ≥ 2"),
    ("reshape", [(3, 4)], {"shape": [5, -1]}, "cannot reshape"),
    ("transpose", [(3, 4)], {"perm": [0, 0]}, "not a permutation"),
    ("split", [(3, 4)], {"axis": 1, "sizes": [1, 2]}, "do not add up"),
    ("softmax", [(3, 4)], {"axis": 2}, "out of range"),
    ("layernorm", [(3, 4), (3,), (4,)], {}, "gamma"),
    ("cross_entropy", [(3, 4), (4,)], {}, "targets"),
    ("concat", [(3, 4), (2, 5)], {"axis": 0}, "do not fit"),
    ("slice", [(3, 4)], {"axis": 1, "start": 2, "stop": 2}, "empty"),
]


@pytest.mark.parametrize("op,shapes,attrs,msg", BAD, ids=[b[0] + "-" + b[3][:12] for b in BAD])
def test_bad_shapes_raise_at_build_time_naming_node_scope_and_shapes(op, shapes, attrs, msg):
    g = tg.Graph("bad")
    dtypes = ["int64" if op == "cross_entropy" and i == 1 else "float32" for i in range(len(shapes))]
    ins = [g.input(f"x{i}", s, d) for i, (s, d) in enumerate(zip(shapes, dtypes))]
    with g.scope("layer_7/attn"), pytest.raises(ShapeError) as e:
        g.apply(op, ins, attrs)
    text = str(e.value)
    assert msg in text and "layer_7/attn" in text and op in text
    assert "×".join(map(str, shapes[0])) in text  # names the input shapes


def test_mixed_dtypes_are_rejected():
    g = tg.Graph("bad")
    with pytest.raises(ShapeError, match="one dtype"):
        g.input("a", (2,), "float32") + g.input("b", (2,), "float64")


def test_flops_of_matmul_is_closed_form():
    g = tg.Graph("f")
    y = g.input("a", ("B", 4, 5), "float32") @ g.input("b", (5, 6), "float32")
    from tgraph.execute import graph_flops

    assert graph_flops(g, {"B": 3}) == 2 * 3 * 4 * 5 * 6
    assert y.shape == ("B", 4, 6)
    assert math.isclose(graph_flops(g, {"B": 1}), 240)
