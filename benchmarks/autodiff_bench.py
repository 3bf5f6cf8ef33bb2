"""Time of the autodiff transformation itself: grad() on the gpt2-small graph (heads split,
with loss). Target: under 1 s. PyTorch has no ahead-of-time backward graph to compare
with (autograd records its tape during each forward run), so no peer ratio here."""

from __future__ import annotations

from timing import best_of  # benchmarks/timing.py, beside this script

from tgraph.autodiff import grad
from tgraph.models import build_model


def main() -> None:
    g = build_model("gpt", preset="gpt2-small", loss=True, heads="split")
    seconds = best_of(lambda: grad(g, "loss"), repeats=3, warmup=False)
    fb = grad(g, "loss")
    print(f"forward graph: {len(g.nodes)} nodes; forward+backward: {len(fb.nodes)} nodes, "
          f"{len(fb.meta['grad']['wrt'])} gradients")
    print(f"grad() on gpt2-small (heads split): {seconds:.3f} s (target < 1 s)")


if __name__ == "__main__":
    main()
