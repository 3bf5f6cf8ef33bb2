"""make demo: build a small attention block as a graph, save it, load it back and run it."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

import tgraph as tg
from tgraph import builder as tb


def attention_block(d_model: int = 32, n_heads: int = 4) -> tg.Graph:
    g = tg.Graph("attention_block", meta={"dims": {"B": 2, "T": 8}})
    x = g.input("x", "float32", ("B", "T", d_model))
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


def main() -> None:
    out = Path(tempfile.mkdtemp(prefix="tgraph-demo-"))
    g = attention_block()
    print(g)
    tg.save_graph(g, out / "attention.json")
    params = tg.init_params(g, seed=0)
    tg.save_weights(params, out / "attention.npz")
    g2 = tg.load_graph(out / "attention.json")
    x = np.random.default_rng(0).standard_normal((2, 8, 32)).astype(np.float32)
    y = tg.run(g2, {"x": x}, tg.load_weights(out / "attention.npz", g2))["y"]
    print(f"ran {len(g2.nodes)} nodes: y {y.dtype}{list(y.shape)}, row means ≈ 0: "
          f"{np.allclose(y.mean(-1), 0, atol=1e-5)}")
    print(f"files in {out}")


if __name__ == "__main__":
    main()
