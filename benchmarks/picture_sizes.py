"""Picture sizes of the README's render commands and the demo's unfolded transformer:
width × height in pixels (96 dpi, as a browser shows an SVG) and the tallest cluster's
height against the height its contents need (dot's JSON). For the issue-13 before/after.

    python benchmarks/picture_sizes.py [OUT_DIR]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from tgraph.models import build_model
from tgraph.render import render, render_diff

PX_PER_PT = 96 / 72

CASES = {  # name -> (README/demo command, how to draw it)
    "gpt full": ("tgraph render gpt --preset tiny",
                 lambda p: render(build_model("gpt", preset="tiny"), p)),
    "gpt depth 0": ("tgraph render gpt --preset tiny --depth 0",
                    lambda p: render(build_model("gpt", preset="tiny"), p, depth=0)),
    "transformer depth 3": ("tgraph render transformer --preset tiny --depth 3",
                            lambda p: render(build_model("transformer", preset="tiny"), p, depth=3)),
    "gpt heat depth 1": ("tgraph render gpt --preset tiny --depth 1 --color flops",
                         lambda p: render(build_model("gpt", preset="tiny"), p, depth=1,
                                          color="flops")),
    "diff post/pre": ("tgraph diff gpt gpt --preset tiny --set n_layers=1 --set-a norm=post "
                      "--set-b norm=pre",
                      lambda p: render_diff(build_model("gpt", preset="tiny", n_layers=1,
                                                        norm="post"),
                                            build_model("gpt", preset="tiny", n_layers=1,
                                                        norm="pre"), p)),
    "backward depth 3": ("tgraph render fwdbwd.json --depth 3 (gpt tiny, loss)",
                         lambda p: render(build_model("gpt", preset="tiny", loss=True), p,
                                          depth=3, backward=True)),
    "demo transformer_full": ("make demo: transformer tiny, --no-fold, every primitive",
                              lambda p: render(build_model("transformer", preset="tiny",
                                                           loss=True), p, fold=False)),
}


def measure(dot_file: Path) -> dict:
    layout = json.loads(subprocess.run(["dot", "-Tjson", str(dot_file)], capture_output=True,
                                       check=True).stdout)
    x0, y0, x1, y1 = map(float, layout["bb"].split(","))
    worst = 0.0
    for obj in layout.get("objects", []):
        if obj.get("name", "").startswith("cluster"):
            bx0, by0, bx1, by1 = map(float, obj["bb"].split(","))
            worst = max(worst, (by1 - by0) * PX_PER_PT)
    return {"width_px": round((x1 - x0) * PX_PER_PT), "height_px": round((y1 - y0) * PX_PER_PT),
            "tallest_cluster_px": round(worst)}


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    print(f"{'picture':24} {'width×height px':>18} {'area Mpx':>9} {'tallest cluster px':>19}")
    for name, (_, draw) in CASES.items():
        path = out / (name.replace(" ", "_").replace("/", "_") + ".dot")
        draw(path)
        m = measure(path)
        area = m["width_px"] * m["height_px"] / 1e6
        print(f"{name:24} {m['width_px']:>8}×{m['height_px']:<9} {area:9.1f} "
              f"{m['tallest_cluster_px']:>19}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()))
