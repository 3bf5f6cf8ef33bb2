"""Model zoo: configs, presets and parameter counts, graph structure, heads layouts,
symbolic dims and the loss, checked against closed forms and PyTorch."""

import re
from collections import defaultdict

import numpy as np
import pytest
import torch
from models_torch_ref import torch_logits
from test_models_reference import BASE, feeds_for, random_params

import tgraph
from tgraph.errors import TGraphError
from tgraph.feeds import random_feeds
from tgraph.models import MODELS, build_model
from tgraph.models.layout import to_layout

MODEL_NAMES = ["transformer", "gpt", "bert", "vit"]


# ----- configs and presets ------------------------------------------------------------------
def test_overrides_from_strings_equal_typed_values():
    a = build_model("gpt", n_layers="3", tie_embeddings="false", eps="1e-6", heads="batched")
    b = build_model("gpt", n_layers=3, tie_embeddings=False, eps=1e-6, heads="batched")
    assert a.meta["config"] == b.meta["config"]
    assert a.meta["config"]["n_layers"] == 3 and a.meta["config"]["tie_embeddings"] is False


@pytest.mark.parametrize("overrides,message", [
    ({"nlayers": 2}, "unknown config key 'nlayers'; valid keys: n_layers, "),
    ({"heads": "both"}, "'heads' must be one of split|batched, got 'both'"),
    ({"n_layers": "two"}, "'n_layers' needs a int, got 'two'"),
    ({"tie_embeddings": "maybe"}, "'tie_embeddings' needs a bool"),
    ({"d_model": 30, "n_heads": 4}, "d_model=30 must be divisible by n_heads=4"),
    ({"pos": "rope", "d_model": 12, "n_heads": 4}, "pos=rope needs an even head width"),
    ({"window": -1}, "window=-1 must be 0 or a positive integer"),
])
def test_bad_overrides_name_the_key(overrides, message):
    with pytest.raises(TGraphError, match=re.escape(message)):
        build_model("gpt", **overrides)


def test_unknown_model_and_preset_list_the_choices():
    with pytest.raises(TGraphError, match="unknown model 'llama'; models: transformer, gpt"):
        build_model("llama")
    with pytest.raises(TGraphError, match="no preset 'huge'; presets: tiny, gpt2-small"):
        build_model("gpt", preset="huge")
    with pytest.raises(TGraphError, match="image_size=10 must be divisible by patch_size=4"):
        build_model("vit", image_size=10)
    with pytest.raises(TGraphError, match="unknown config key 'vocab'"):
        build_model("vit", vocab=10)


def test_gpt2_small_has_gpt2s_parameter_count():
    g = build_model("gpt", preset="gpt2-small", heads="batched").validate()
    d, v, n, f, L = 768, 50257, 1024, 3072, 12
    per_layer = 4 * d * d + 4 * d + 2 * d * f + f + d + 4 * d  # attention, ffn, 2 LayerNorms
    assert g.param_count() == v * d + n * d + L * per_layer + 2 * d == 124_439_808
    assert build_model("gpt", preset="gpt2-small").param_count() == 124_439_808  # split heads
    assert g.meta["dims"] == {"B": 1, "T": 128}
    assert g.meta["int_ranges"]["tokens"] == 50257


def test_transformer_base_counts_like_torch_nn_transformer():
    """nn.Transformer adds a final LayerNorm to each stack (pre-LN style) and has no
    embeddings; the paper's post-LN model has a shared [vocab, 512] table instead."""
    peer = torch.nn.Transformer(512, 8, 6, 6, 2048, batch_first=True, device="meta")
    torch_count = sum(p.numel() for p in peer.parameters())
    g = build_model("transformer", preset="base")
    assert g.param_count() == torch_count - 2 * 2 * 512 + 37000 * 512


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_tiny_preset_runs_from_its_meta(name):
    g = build_model(name, preset="tiny", loss=True)
    assert g.meta["model"] == name and g.meta["config"] == MODELS[name].make_config().to_json()
    out = tgraph.run(g, random_feeds(g), tgraph.init_params(g))
    assert np.isfinite(out["loss"]) and out["loss"].shape == ()
    ranges = g.meta["int_ranges"]
    assert all(v.name in ranges for v in g.inputs if v.dtype == "int64")


# ----- structure ------------------------------------------------------------------------
def layer_signature(graph, scope):
    """Ops, attrs and types of a layer's nodes, with the layer's own name taken out."""
    def local(name):
        return name.replace(scope, "LAYER")
    return [(n.op, sorted(n.attrs.items()), [str(v.type) for v in n.outputs],
             [local(v.name) if v.kind == "param" else str(v.type) for v in n.inputs])
            for n in graph.nodes if n.scope.startswith(scope + "/") or n.scope == scope]


@pytest.mark.parametrize("name,options", [
    ("gpt", {"pos": "rope"}), ("gpt", {"pos": "alibi", "heads": "batched"}),
    ("bert", {"window": 2}), ("transformer", {"score": "additive", "pos": "rope"}),
    ("vit", {}),
])
def test_repeated_layers_are_identical_and_share_no_constant(name, options):
    g = build_model(name, n_layers=3, **options)
    stack = "decoder" if name in ("gpt", "transformer") else "encoder"
    first = layer_signature(g, f"{stack}/layer_0")
    assert first and all(layer_signature(g, f"{stack}/layer_{i}") == first for i in (1, 2))
    layers_using = defaultdict(set)
    for n in g.nodes:
        m = re.match(r"(\w+/layer_\d+)", n.scope)
        for v in n.inputs:
            if v.kind == "const" and m:
                layers_using[v.name].add(m.group(1))
    assert layers_using and all(len(s) == 1 for s in layers_using.values())


def test_split_heads_have_their_own_scoped_paths():
    g = build_model("transformer", n_heads=4)
    scopes = {n.scope for n in g.nodes}
    assert "decoder/layer_1/self_attn/head_3/scores" in scopes
    assert "decoder/layer_1/cross_attn/head_0/scores" in scopes
    assert {"embed/src", "embed/tgt", "head", "decoder/layer_0/ffn"} <= scopes
    masks = [n for n in g.nodes if n.op == "mask"]
    assert len(masks) == 2 * 4 and all(n.attrs["causal"] and not n.inputs[1:] for n in masks)
    assert "encoder/layer_0/self_attn/head_2/w_q" in {p.name for p in g.params}
    residuals = [n for n in g.nodes if n.meta.get("role") == "residual"]
    assert len(residuals) == 2 * 2 + 2 * 3


# ----- heads layouts ----------------------------------------------------------------------
@pytest.mark.parametrize("name,options", [
    ("gpt", {"pos": "rope"}), ("bert", {"score": "additive", "value_rank": 2}),
    ("transformer", {"pos": "alibi"}), ("vit", {"value_rank": 3}),
])
def test_split_and_batched_heads_give_the_same_numbers(name, options):
    cfg = {**BASE[name], **options, "dtype": "float64"}
    split, batched = build_model(name, **cfg), build_model(name, heads="batched", **cfg)
    params = random_params(split)
    as_batched = to_layout(params, batched)
    back = to_layout(as_batched, split)
    assert all(np.array_equal(back[k], params[k]) for k in params)
    feeds = feeds_for(name, split)
    a = tgraph.run(split, feeds, params)["logits"]
    b = tgraph.run(batched, feeds, as_batched)["logits"]
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_layout_names_a_missing_weight():
    g = build_model("gpt")
    params = random_params(g)
    del params["decoder/layer_1/self_attn/head_2/w_k"]
    with pytest.raises(TGraphError, match="lack decoder/layer_1/self_attn/head_2/w_k"):
        to_layout(params, build_model("gpt", heads="batched"))
    del params["decoder/layer_0/ffn/w_1"]
    with pytest.raises(TGraphError, match="lack 2 parameters .* e.g. 'decoder/layer_0/ffn/w_1'"):
        to_layout(params, g)


# ----- symbolic dims and the loss ---------------------------------------------------------
@pytest.mark.parametrize("name", ["gpt", "bert", "transformer", "vit"])
def test_one_graph_runs_at_several_sizes(name):
    cfg = {**BASE[name], "dtype": "float64", "pos": "learned"}
    g = build_model(name, **cfg)
    ex = tgraph.Executable(g)
    params = random_params(g)
    batched = to_layout(params, build_model(name, heads="batched", **cfg))
    for b, t in ((1, 1), (3, 4), (2, 11)):
        feeds = feeds_for(name, g, b=b, t=t)
        ours = ex.run(feeds, params)["logits"]
        ref = torch_logits(name, g.meta["config"], batched, feeds)
        np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-6 * np.abs(ref).max())


@pytest.mark.parametrize("name", ["gpt", "vit"])
def test_loss_is_torch_cross_entropy_of_the_logits(name):
    g = build_model(name, loss=True, **BASE[name], dtype="float64")
    params = random_params(g)
    feeds = feeds_for(name, g, b=3, t=4)
    ref = torch_logits(name, g.meta["config"],
                       to_layout(params, build_model(name, heads="batched", **BASE[name],
                                                     dtype="float64")), feeds)
    rng = np.random.default_rng(5)
    targets = rng.integers(0, ref.shape[-1], ref.shape[:-1])
    loss = tgraph.run(g, {**feeds, "targets": targets}, params)["loss"]
    expected = torch.nn.functional.cross_entropy(
        torch.from_numpy(ref.reshape(-1, ref.shape[-1])), torch.from_numpy(targets.ravel()))
    np.testing.assert_allclose(loss, expected.item(), rtol=1e-10)
