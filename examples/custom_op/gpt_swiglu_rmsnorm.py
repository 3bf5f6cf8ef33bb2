"""Swap the plugin's ops into a GPT, draw it, and train it a few steps.

    python examples/custom_op/gpt_swiglu_rmsnorm.py [--steps 30] [--out DIR]

Works with the plugin installed (``pip install examples/custom_op``: tgraph finds it
through its entry point) or not (this script then imports it from beside itself).

RMSNorm goes in by name: ``build_model("gpt", norm_op="rmsnorm")`` (the op declares its
gain, so the model creates it). SwiGLU changes the block's structure (a second projection
feeds it), so a graph-to-graph rewrite replays the GPT node by node, building
``swiglu(x·W_gate, x·W_1 + b_1)`` where it had GELU; the unchanged ``W_2`` reads it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

import tgraph as tg
from tgraph.models import build_model
from tgraph.ops import all_ops
from tgraph.plugins import load_installed

load_installed()
if "swiglu" not in all_ops():  # not installed: use the copy beside this script
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from tgraph_swiglu_rmsnorm import swiglu


def swap_in_swiglu(src: tg.Graph) -> tg.Graph:
    """A copy of ``src`` with a SwiGLU feed-forward wherever it had GELU."""
    g = tg.Graph(f"{src.name}-swiglu", dict(src.meta))
    new = {v: g.input(v.name, v.shape, v.dtype) for v in src.inputs}
    new |= {v: g.param(v.name, v.shape, v.dtype, v.init) for v in src.params}
    new |= {v: g.const(v.data, v.name, v.dtype) for v in src.consts}
    for n in src.nodes:
        ins = [new[v] for v in n.inputs]
        with g.scope(n.scope):
            if n.op == "gelu":
                x, w_1 = feed_forward_input(n.inputs[0])
                gate = new[x] @ g.param("w_gate", w_1.shape, w_1.dtype, w_1.init)
                out = swiglu(gate, ins[0])
            else:
                out = g.apply(n.op, ins, n.attrs)
        outs = out if isinstance(out, tuple) else (out,)
        outs[0].node.meta.update(n.meta)  # e.g. residual adds stay marked for the renderer
        new.update(zip(n.outputs, outs))
    for name, v in src.outputs.items():
        g.set_output(name, new[v])
    return g.validate()


def feed_forward_input(h: tg.Value):
    """(x, W_1) of a feed-forward's first projection h = x·W_1 (+ b_1)."""
    node = h.node.inputs[0].node if h.node.op == "add" else h.node
    x, w_1 = node.inputs
    return x, w_1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--out", type=Path, default=None, help="folder for the diagram")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="tgraph-swiglu-"))
    out.mkdir(parents=True, exist_ok=True)

    from tgraph.render import render
    from tgraph.train import AdamW, Trainer

    gpt = build_model("gpt", preset="tiny", loss=True, vocab=16, max_len=16)
    g = swap_in_swiglu(build_model("gpt", preset="tiny", loss=True, vocab=16, max_len=16,
                                   norm_op="rmsnorm"))
    ops = {n.op for n in g.nodes}
    print(f"{g.name}: {len(g.nodes)} nodes, {g.param_count():,} parameters "
          f"(GPT had {gpt.param_count():,}); swiglu {'swiglu' in ops}, "
          f"rmsnorm {'rmsnorm' in ops}, layernorm {'layernorm' in ops}")
    tg.save_graph(g, out / "gpt-swiglu-rmsnorm.json")
    drawn = render(g, out / "gpt-swiglu-rmsnorm.svg", depth=4)
    print(f"diagram: {drawn.path}")

    # A task a tiny model learns in a few steps: continue a sequence that counts up mod 16.
    rng = np.random.default_rng(0)

    def batch(step):
        start = rng.integers(0, 16, (8, 1))
        seq = (start + np.arange(17)) % 16
        return {"tokens": seq[:, :-1], "targets": seq[:, 1:]}

    trainer = Trainer(g, tg.init_params(g, seed=0), AdamW(3e-3))
    losses = trainer.fit(batch, steps=args.steps)
    print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f} after {args.steps} steps "
          f"(uniform guessing: {np.log(16):.3f})")


if __name__ == "__main__":
    main()
