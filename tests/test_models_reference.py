"""Each model and each option against its PyTorch peer on the same weights.

Weights are random (biases and LayerNorm gains too, so a misplaced bias shows) and the
peer reads them in the batched-heads layout, converted by ``tgraph.models.layout``.
"""

import numpy as np
import pytest
from models_torch_ref import torch_logits

import tgraph
from tgraph.models import build_model
from tgraph.models.layout import to_layout

SMALL = {"n_layers": 2, "d_model": 16, "n_heads": 4, "d_ff": 32}
TOKENS = dict(SMALL, vocab=23, max_len=12)
BASE = {
    "gpt": TOKENS,
    "bert": TOKENS,
    "transformer": {**TOKENS, "n_enc_layers": 2, "n_dec_layers": 1},
    "vit": dict(SMALL, image_size=8, patch_size=4, channels=3, n_classes=5),
}
OPTIONS = [
    {}, {"norm": "post"}, {"norm": "pre"}, {"pos": "sinusoidal"}, {"pos": "learned"},
    {"pos": "rope"}, {"pos": "alibi"}, {"heads": "batched"}, {"score": "additive"},
    {"value_rank": 3}, {"value_rank": 3, "heads": "batched", "score": "additive"},
    {"window": 1}, {"activation": "relu"},
]
TOKEN_OPTIONS = [{"tie_embeddings": True, "embed": "one_hot"}, {"tie_embeddings": False}]
# against a float64 reference on the same (float32-rounded) weights, so that the bound does not
# depend on torch's float32 kernels on the host at hand
TOLERANCE = {"float64": 1e-6, "float32": 1e-4}


def random_params(graph, seed=0):
    """N(0, 0.3) everywhere; LayerNorm gains 1 + N(0, 0.1)."""
    rng = np.random.default_rng(seed)
    out = {}
    for p in graph.params:
        a = rng.normal(0, 0.3, p.shape)
        out[p.name] = (1 + a / 3 if p.name.endswith("gamma") else a).astype(p.dtype)
    return out


def feeds_for(model, graph, b=2, t=5, seed=1):
    rng = np.random.default_rng(seed)
    cfg = graph.meta["config"]
    if model == "vit":
        size = (b, cfg["channels"], cfg["image_size"], cfg["image_size"])
        return {"images": rng.standard_normal(size).astype(cfg["dtype"])}
    if model == "transformer":
        return {"src_tokens": rng.integers(0, cfg["vocab"], (b, t + 1)),
                "tgt_tokens": rng.integers(0, cfg["vocab"], (b, t))}
    feeds = {"tokens": rng.integers(0, cfg["vocab"], (b, t))}
    if model == "bert":
        keep = np.ones((b, t), dtype=bool)
        keep[-1, max(1, t - 2):] = False  # the last sequence is padded
        feeds["attention_mask"] = keep
    return feeds


def check_against_torch(model, options, dtype):
    graph = build_model(model, dtype=dtype, **{**BASE[model], **options})
    params = random_params(graph)
    feeds = feeds_for(model, graph)
    ours = tgraph.run(graph, feeds, params)["logits"]
    batched = build_model(model, dtype=dtype, **{**BASE[model], **options, "heads": "batched"})
    ref = torch_logits(model, {**graph.meta["config"], "dtype": "float64"},
                       as_float64(to_layout(params, batched)), as_float64(feeds))
    rtol = TOLERANCE[dtype]
    assert ours.dtype == np.dtype(dtype)
    np.testing.assert_allclose(ours, ref, rtol=rtol, atol=rtol * np.abs(ref).max())


def as_float64(arrays):
    return {k: a.astype(np.float64) if a.dtype.kind == "f" else a for k, a in arrays.items()}


def cases(models):
    return [(m, o) for m in models for o in OPTIONS + (TOKEN_OPTIONS if m != "vit" else [])]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("model,options", cases(["gpt", "bert", "transformer", "vit"]), ids=str)
def test_model_matches_torch(model, options, dtype):
    check_against_torch(model, options, dtype)
