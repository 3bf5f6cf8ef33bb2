"""Whole-model gradients vs PyTorch on the same weights, float64 rtol 1e-6: every model of
the zoo in a tiny config, with every option the reference test covers.

The PyTorch peer reads weights in the batched-heads layout; the layout change only moves
entries, so our split-heads gradients moved the same way must equal its gradients. Where
the peer uses the weight tensors themselves (embeddings, written-out attention, final
norms, heads) the reference is PyTorch autograd; where it copies them into torch.nn
modules (no gradient flows back to the copy's source) it is the derivative of the peer's
loss along a random direction in the space of those weights, by central differences.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from models_torch_ref import MODELS as TORCH_MODELS
from test_models_reference import BASE, cases, feeds_for, random_params

import tgraph
from tgraph.autodiff import grad
from tgraph.models import MODELS, build_model
from tgraph.models.layout import to_layout


class LeafWeights:
    """The reference's weight lookup, handing out one autograd leaf per parameter."""

    def __init__(self, params):
        self.leaves = {k: torch.tensor(a, requires_grad=True) for k, a in params.items()}

    def __call__(self, name):
        return self.leaves[name]

    def __contains__(self, name):
        return name in self.leaves


def torch_loss(model, cfg, w, feeds):
    logits = TORCH_MODELS[model](cfg, w, feeds)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                           torch.from_numpy(feeds["targets"]).reshape(-1))


def directional_derivative(model, cfg, params, feeds, direction: dict, eps=1e-5):
    def at(step):
        shifted = LeafWeights({k: a + step * direction[k] if k in direction else a
                               for k, a in params.items()})
        with torch.no_grad():
            return torch_loss(model, cfg, shifted, feeds).item()

    return (at(eps) - at(-eps)) / (2 * eps)


def targets_for(model, cfg, feeds, rng):
    if model == "vit":
        return rng.integers(0, cfg["n_classes"], (len(feeds["images"]),))
    tokens = feeds.get("tgt_tokens", feeds.get("tokens"))
    return rng.integers(0, cfg["vocab"], tokens.shape)


@pytest.mark.parametrize("model,options", cases(sorted(MODELS)), ids=str)
def test_model_gradients_match_torch_autograd(model, options):
    overrides = {**BASE[model], **options, "dtype": "float64"}
    graph = build_model(model, loss=True, **overrides)
    params = random_params(graph)
    feeds = feeds_for(model, graph)
    feeds["targets"] = targets_for(model, graph.meta["config"], feeds,
                                   np.random.default_rng(2))
    out = tgraph.run(grad(graph, "loss"), feeds, params)

    batched = build_model(model, loss=True, **{**overrides, "heads": "batched"})
    cfg, theirs = graph.meta["config"], to_layout(params, batched)
    w = LeafWeights(theirs)
    loss = torch_loss(model, cfg, w, feeds)
    loss.backward()

    np.testing.assert_allclose(out["loss"], loss.item(), rtol=1e-10)
    zero = np.zeros
    ours = to_layout({p: out.get(f"grad/{p}", zero(a.shape)) for p, a in params.items()},
                     batched)
    for name, leaf in w.leaves.items():
        if leaf.grad is not None:
            np.testing.assert_allclose(ours[name], leaf.grad.numpy(), rtol=1e-6, atol=1e-10,
                                       err_msg=name)
    rng = np.random.default_rng(3)
    copied = {k: rng.standard_normal(leaf.shape) for k, leaf in w.leaves.items()
              if leaf.grad is None}
    if copied:
        ref = directional_derivative(model, cfg, theirs, feeds, copied)
        ours_along = sum(np.sum(ours[k] * v) for k, v in copied.items())
        np.testing.assert_allclose(ours_along, ref, rtol=1e-6, err_msg=", ".join(copied))
