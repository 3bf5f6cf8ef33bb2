"""make demo: the main job on a built-in example.

Build the 2017 encoder–decoder Transformer (tiny config) as a graph of primitive ops,
render it, run it, differentiate it (and check one gradient by finite differences),
compile it into a batched graph, and save everything under out/demo/.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import tgraph as tg
from tgraph import builder as tb
from tgraph.autodiff import grad
from tgraph.feeds import random_feeds
from tgraph.models import build_model
from tgraph.passes import optimize
from tgraph.render import render

OUT = Path("out/demo")


def attention_block(d_model: int = 32, n_heads: int = 4) -> tg.Graph:
    """A hand-built causal multi-head attention block with add & norm (the builder API)."""
    g = tg.Graph("attention_block", meta={"dims": {"B": 2, "T": 8}})
    x = g.input("x", ("B", "T", d_model), "float32")
    dh = d_model // n_heads
    heads = []
    with g.scope("attn"):
        for h in range(n_heads):
            with g.scope(f"head_{h}"):
                q = tb.matmul(x, g.param("w_q", (d_model, dh)))
                k = tb.matmul(x, g.param("w_k", (d_model, dh)))
                v = tb.matmul(x, g.param("w_v", (d_model, dh)))
                s = tb.scale(tb.matmul(q, tb.transpose(k, (0, 2, 1))), dh ** -0.5)
                heads.append(tb.matmul(tb.softmax(tb.mask(s, causal=True)), v))
        y = tb.matmul(tb.concat(*heads, axis=-1), g.param("w_o", (d_model, d_model)))
    with g.scope("add_norm"):
        y = tb.layernorm(x + y, g.param("gamma", (d_model,), init={"dist": "ones"}),
                         g.param("beta", (d_model,), init={"dist": "zeros"}))
    g.set_output("y", y)
    return g


def step(text: str) -> None:
    print(f"\n== {text}")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)

    step("build: the encoder–decoder of 'Attention Is All You Need' (tiny, post-LN)")
    g = build_model("transformer", preset="tiny", loss=True)
    print(f"{len(g.nodes)} nodes, {g.param_count():,} parameters; inputs "
          + ", ".join(f"{v.name} {v.type}" for v in g.inputs))
    tg.save_graph(g, OUT / "transformer.json")

    step("render: overview, layers folded, and every head's primitives")
    for name, depth, fold in (("overview", 1, True), ("layers", 3, True), ("full", None, False)):
        r = render(g, OUT / f"transformer_{name}.svg", depth=depth, fold=fold)
        print(f"{r.path}: {r.items} boxes, {r.edges} edges, {r.seconds:.2f} s")

    step("run: random tokens through the graph on NumPy")
    params = tg.init_params(g, seed=0)
    tg.save_weights(params, OUT / "transformer.npz")
    feeds = random_feeds(g, {"B": 2, "S": 7, "T": 6}, seed=0)
    out = tg.run(g, feeds, params)
    print(f"logits {out['logits'].dtype}{list(out['logits'].shape)}, loss {float(out['loss']):.4f}"
          f" (a uniform guess over {g.meta['config']['vocab']} tokens: "
          f"{np.log(g.meta['config']['vocab']):.4f})")

    step("differentiate: the backward pass is a graph too")
    gg = grad(g, "loss")
    n_bwd = sum(n.scope.startswith("backward") for n in gg.nodes)
    print(f"forward+backward graph: {len(gg.nodes)} nodes ({n_bwd} backward), "
          f"{sum(k.startswith('grad/') for k in gg.outputs)} gradient outputs")
    tg.save_graph(gg, OUT / "transformer_grad.json")
    render(gg, OUT / "transformer_backward.svg", depth=2)
    grads = tg.run(gg, feeds, params)
    name = "decoder/layer_0/ffn/w_1"
    direction = np.random.default_rng(1).standard_normal(params[name].shape).astype(np.float32)
    direction /= np.linalg.norm(direction)
    eps = 1e-2

    def loss_at(t):
        return float(tg.run(g, feeds, {**params, name: params[name] + t * direction})["loss"])

    fd = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
    ad = float((grads[f"grad/{name}"] * direction).sum())
    print(f"d loss/d {name} along a random direction: autodiff {ad:.6f}, "
          f"finite differences {fd:.6f}")

    step("compile: the readable graph (one path per head) becomes a batched one")
    fast, report = optimize(g)
    print(f"{len(g.nodes)} → {len(fast.nodes)} nodes ({report}); its backward pass: "
          f"{len(grad(fast, 'loss').nodes)} nodes instead of {len(gg.nodes)}")
    np.testing.assert_allclose(tg.run(fast, feeds, params)["loss"], out["loss"], rtol=1e-5)
    tg.save_graph(fast, OUT / "transformer_fast.json")
    render(fast, OUT / "transformer_fast.svg", depth=4)

    step("a hand-built attention block, saved, loaded and run")
    blk = attention_block()
    tg.save_graph(blk, OUT / "attention.json")
    loaded = tg.load_graph(OUT / "attention.json")
    y = tg.run(loaded, random_feeds(loaded), tg.init_params(loaded))["y"]
    print(f"{len(loaded.nodes)} nodes, y {y.dtype}{list(y.shape)}")
    print(f"\nfiles in {OUT}/ (open the .svg files in a browser)")


if __name__ == "__main__":
    sys.exit(main())
