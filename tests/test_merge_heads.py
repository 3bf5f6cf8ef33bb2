"""merge_heads turns the diagram graph (one path per head) into a batched one with the
same numbers, reading the same weights file."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

import tgraph as tg
from tgraph.autodiff import grad
from tgraph.feeds import random_feeds
from tgraph.models import build_model
from tgraph.passes import merge_heads, optimize


def heads_in(g):
    return {n.scope.split("/head_")[0] for n in g.nodes if "/head_" in n.scope}


@pytest.mark.parametrize("model,options", [
    ("gpt", {}), ("gpt", {"pos": "rope"}), ("gpt", {"pos": "alibi"}),
    ("gpt", {"value_rank": 4}), ("gpt", {"window": 2}),
    ("bert", {}), ("transformer", {}), ("vit", {}),
])
def test_merged_graph_gives_the_same_numbers(model, options):
    g = build_model(model, preset="tiny", loss=True, dtype="float64", **options)
    merged, count = merge_heads(g)
    attention_blocks = len(heads_in(g))
    assert count == attention_blocks > 0
    assert not heads_in(merged)  # no per-head path is left
    assert sum(n.op == "softmax" for n in merged.nodes) == attention_blocks
    assert [p.name for p in merged.params] == [p.name for p in g.params]
    params = tg.init_params(g, 0)
    feeds = random_feeds(g, {"B": 2, "T": 7, "S": 5}, seed=1)
    want, got = tg.run(g, feeds, params), tg.run(merged, feeds, params)
    np.testing.assert_allclose(got["logits"], want["logits"], rtol=1e-12, atol=1e-12)


def test_gradients_of_the_merged_graph_match():
    g = build_model("gpt", preset="tiny", loss=True, dtype="float64", n_layers=1)
    merged, _ = merge_heads(g)
    params = tg.init_params(g, 0)
    feeds = random_feeds(g, {"B": 2, "T": 6}, seed=2)
    want, got = tg.run(grad(g), feeds, params), tg.run(grad(merged), feeds, params)
    for name in params:
        np.testing.assert_allclose(got[f"grad/{name}"], want[f"grad/{name}"], rtol=1e-9,
                                   atol=1e-12)


def test_heads_that_do_not_fit_the_rules_are_left_alone():
    g = build_model("gpt", preset="tiny", score="additive")  # per-head reshapes
    merged, count = merge_heads(g)
    assert count == 0 and len(merged.nodes) == len(g.nodes)


@pytest.mark.parametrize("model", ["gpt", "bert", "transformer", "vit"])
def test_heads_drawn_one_by_one_compile_to_the_batched_build(model):
    """At -O2 the diagram graph (a path per head) has the batched build's nodes, plus one
    concat of the heads' weights and one of their biases per projection (each head's
    weight is its own parameter): no reshape or transpose is left on them. Products of one
    input, their weights concatenated anyway, are then one product, split: two products and
    a bias add fewer for each piece past the first."""
    def ops(heads):
        fast, _ = optimize(build_model(model, preset="tiny", loss=True, heads=heads), 2)
        merged = sum(len(n.attrs["sizes"]) - 1 for n in fast.nodes if n.op == "split")
        bias_add = [n.op == "fused" and [e["op"] for e in n.attrs["body"]] == ["add"]
                    for n in fast.nodes]  # a lone bias add runs as a two-thread loop
        return Counter("add" if one else n.op for n, one in zip(fast.nodes, bias_add)), merged

    (split, merged), (batched, _) = ops("split"), ops("batched")
    extra = split - batched
    assert set(extra) == {"concat", "split"} and extra["concat"] <= 2 * batched["matmul"]
    assert merged > 0 and batched - split == Counter(matmul=merged, add=merged)
