"""Wall time to SVG for the gpt2-small graph (heads split): every primitive unfolded, the
folded default, and both with the backward pass; with node counts. When torchview is
importable (it is not a dependency), it draws the PyTorch twin at full depth in the same
process and the ratio is printed.

    python benchmarks/render_bench.py [--preset gpt2-small] [--skip-backward-full]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from tgraph.models import build_model
from tgraph.render import render, with_backward


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def torchview_seconds(cfg: dict, out: Path) -> tuple[float, int] | None:
    try:
        import torch
        from torchview import draw_graph
    except ImportError:
        return None
    from torch_gpt import GPT

    model = GPT(cfg["n_layers"], cfg["d_model"], cfg["n_heads"], cfg["d_ff"], cfg["vocab"],
                cfg["max_len"])
    tokens = torch.zeros(1, 128, dtype=torch.long)

    def draw():
        g = draw_graph(model, input_data=(tokens, tokens), depth=100, expand_nested=True,
                       save_graph=False)
        g.visual_graph.format = "svg"
        g.visual_graph.render(out / "torchview", cleanup=True)
        return g

    g, seconds = timed(draw)
    return seconds, g.visual_graph.source.count("\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="gpt2-small")
    ap.add_argument("--skip-backward-full", action="store_true",
                    help="skip the unfolded forward+backward view (the slowest)")
    args = ap.parse_args()
    graph, build_s = timed(lambda: build_model("gpt", preset=args.preset, heads="split",
                                               loss=True))
    both, grad_s = timed(lambda: with_backward(graph))
    print(f"{graph.name}: {len(graph.nodes)} forward nodes (built in {build_s:.2f} s); "
          f"forward+backward {len(both.nodes)} nodes (grad in {grad_s:.2f} s)")
    cases = [("forward, every primitive, --no-fold", graph, {"fold": False}),
             ("forward, folded (default)", graph, {}),
             ("forward, folded, --depth 2", graph, {"depth": 2}),
             ("forward+backward, folded", both, {})]
    if not args.skip_backward_full:
        cases.append(("forward+backward, every primitive, --no-fold", both, {"fold": False}))
    out = Path(tempfile.mkdtemp(prefix="tgraph-render-bench-"))
    ours = None
    print(f"{'view':48} {'boxes':>6} {'edges':>6} {'seconds':>8}")
    for i, (name, g, kw) in enumerate(cases):
        r = render(g, out / f"view{i}.svg", time_budget=600, **kw)
        ours = ours or r.seconds
        print(f"{name:48} {r.items:6d} {r.edges:6d} {r.seconds:8.2f}")
    peer = torchview_seconds(graph.meta["config"], out)
    if peer is None:
        print("torchview not importable: no comparison")
    else:
        seconds, lines = peer
        print(f"torchview, PyTorch twin (batched heads), depth=100: {seconds:.2f} s "
              f"({lines} DOT lines); tgraph unfolded / torchview = {ours / seconds:.2f}")


if __name__ == "__main__":
    main()
