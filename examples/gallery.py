"""The README's pictures: the 2017 encoder-decoder (post-LN), GPT (pre-LN) at depths 0, 2
and full (folded), BERT and ViT, the backward pass of one layer, the Post-LN vs Pre-LN diff.

    python examples/gallery.py [OUT_DIR]      (default docs/images)
"""

from __future__ import annotations

import sys
from pathlib import Path

from tgraph.models import MODELS, build_model
from tgraph.render import render, render_diff


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    gpt = build_model("gpt", preset="tiny", norm="pre")
    for depth, name in ((0, "overview"), (2, "depth2"), (None, "full")):
        print(render(gpt, out / f"gpt_{name}.svg", depth=depth).path)
    # the README's diff command: split heads, folded as render folds them
    post = build_model("gpt", preset="tiny", norm="post", n_layers=1)
    pre = build_model("gpt", preset="tiny", norm="pre", n_layers=1)
    print(render_diff(post, pre, out / "post_vs_pre_ln.svg").path)
    one = build_model("gpt", preset="tiny", n_layers=1, heads="batched", loss=True)
    print(render(one, out / "gpt_backward.svg", depth=3, backward=True).path)
    for model, depth in (("transformer", 3), ("bert", 2), ("vit", 2)):
        if model in MODELS:  # drawn when the model zoo has them
            g = build_model(model, preset="tiny")
            print(render(g, out / f"{model}_depth{depth}.svg", depth=depth).path)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/images"))
