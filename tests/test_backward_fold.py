"""The backward pass folds like the forward one: identical forward layers and heads get
identical backward layers and heads (counted on the graph itself), so the folded diagram of
forward + backward draws one backward layer and one backward head, and the gradient outputs
of the hidden copies are drawn once with their count."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import Counter

import pytest

from tgraph.autodiff import grad
from tgraph.models import build_model
from tgraph.render import render, view_of
from tgraph.render.hierarchy import split_scope

LAYERS, HEADS = 3, 4
BACKWARD_LAYERS = ("backward", "decoder")


@pytest.fixture(scope="module")
def both():
    g = build_model("gpt", preset="tiny", heads="split", loss=True, n_layers=LAYERS,
                    n_heads=HEADS)
    return grad(g, "loss")


def shape_of(nodes, root: tuple) -> Counter:
    """What a block holds, names aside: (scope inside the block, op, output types)."""
    return Counter((tuple(re.sub(r"_\d+$", "_k", p) for p in split_scope(n.scope)[len(root):]),
                    n.op, tuple(str(v.type) for v in n.outputs)) for n in nodes)


def inside(both, root: tuple) -> list:
    return [n for n in both.nodes if split_scope(n.scope)[: len(root)] == root]


def layer(i: int) -> tuple:
    return (*BACKWARD_LAYERS, f"layer_{i}")


def head(i: int, k: int) -> tuple:
    return (*layer(i), "self_attn", f"head_{k}")


def test_identical_forward_blocks_get_identical_backward_blocks(both):
    layers = [shape_of(inside(both, layer(i)), layer(i)) for i in range(LAYERS)]
    assert layers[0] and all(s == layers[0] for s in layers)  # the last layer too
    heads = [shape_of(inside(both, head(i, k)), head(i, k))
             for i in range(LAYERS) for k in range(HEADS)]
    assert heads[0] and all(s == heads[0] for s in heads)
    # the gradient of the LayerNorm output read by every head is summed outside the heads
    sums = [n for n in inside(both, layer(0)) if n.meta.get("sums", "").endswith("ln_1/layernorm")]
    assert len(sums) == 3 * HEADS - 1
    assert {n.scope for n in sums} == {"/".join((*layer(0), "self_attn"))}


def test_folded_view_draws_one_backward_layer_with_one_backward_head(both):
    view = view_of(both, None, fold=True)
    folded = {p: view.cluster_titles[p][0] for p in view.folded_clusters}
    backward = {p: t for p, t in folded.items() if p[:2] == BACKWARD_LAYERS}
    assert sorted(backward.values()) == [f"head ×{HEADS}", f"layer ×{LAYERS}"]
    # every backward node is drawn unless it is in a hidden layer or a hidden head
    drawn_layer = next(p for p, t in backward.items() if t.startswith("layer"))
    drawn_head = next(p for p, t in backward.items() if t.startswith("head"))

    def hidden(n) -> bool:
        path = split_scope(n.scope)
        in_layer = path[:2] == BACKWARD_LAYERS and len(path) > 2 and path[2].startswith("layer_")
        in_head = len(path) > 4 and path[3] == "self_attn" and path[4].startswith("head_")
        return (in_layer and path[:3] != drawn_layer) or (in_head and path[:5] != drawn_head)

    expected = sum(1 for n in both.nodes
                   if split_scope(n.scope)[:1] == ("backward",) and not hidden(n))
    drawn = [i for i in view.items.values() if i.kind == "op" and "backward" in i.marks]
    assert len(drawn) == expected


def test_gradient_outputs_of_folded_copies_are_drawn_once_with_their_count(both):
    view = view_of(both, None, fold=True)
    grads = [i.lines[0] for i in view.items.values() if i.kind == "grad"]
    assert f"∂L/∂w_q ×{LAYERS * HEADS}" in grads and f"∂L/∂w_1 ×{LAYERS}" in grads
    counts = [int(t.rpartition("×")[2]) if "×" in t else 1 for t in grads]
    assert sum(counts) == sum(name.startswith("grad/") for name in both.outputs)
    unfolded = view_of(both, None, fold=False)
    assert sum(i.kind == "grad" for i in unfolded.items.values()) == sum(counts)


def test_the_laid_out_svg_shows_the_folded_backward_blocks(both, tmp_path):
    render(both, tmp_path / "g.svg")
    texts = [t.text or "" for t in ET.parse(tmp_path / "g.svg").iter()
             if t.tag.endswith("text")]
    assert texts.count(f"layer ×{LAYERS}") == 2  # forward and backward
    assert texts.count(f"head ×{HEADS}") == 2
