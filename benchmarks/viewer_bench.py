"""The HTML viewer on gpt2-small (heads split, every primitive unfolded): time to write the
page, size, load and interaction times in headless Chromium, against the peer: ``dot``
laying out the same graph in one piece (the SVG path), run in the same process.

    python benchmarks/viewer_bench.py [--preset gpt2-small] [--svg-budget 60]

Forward: 2,870 boxes; forward+backward: 10,762, which dot does not lay out in one piece in
25 minutes, so its SVG is given --svg-budget seconds and reported as "> budget".
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tgraph.models import build_model
from tgraph.render import with_backward
from tgraph.render.api import write_view
from tgraph.render.html import write_html
from tgraph.render.view import build_view

# In the page: run fn, then wait for the next frame to be painted; milliseconds.
# Two frames: Chromium paints a large change in the frame after the one it was made in.
FRAME = ("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame("
         "() => setTimeout(r, 0))))")


def page_times(browser, path: Path, search: str) -> dict:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    start = time.perf_counter()
    page.goto(path.as_uri())
    page.wait_for_selector("g.node")
    page.evaluate(FRAME)
    out = {"load_s": time.perf_counter() - start}

    def timed(js: str) -> float:
        return page.evaluate(f"""async () => {{ const t = performance.now(); {js};
            await ({FRAME})(); return performance.now() - t; }}""")

    out["expand_one_ms"] = timed("tgraphViewer.expand('decoder/layer_5')")
    out["search_ms"] = timed(f"tgraphViewer.find({search!r})")
    out["reveal_ms"] = timed(f"tgraphViewer.reveal({search!r})")
    out["expand_all_ms"] = timed("document.getElementById('expand-all').click()")
    out["boxes_all_open"] = page.evaluate("document.querySelectorAll('#viewport g.node').length")
    out["collapse_all_ms"] = timed("document.getElementById('collapse-all').click()")
    out["errors"] = errors
    page.close()
    return out


def svg_seconds(graph, out: Path, budget: float) -> float | None:
    """Seconds for the SVG path (view, DOT, dot in one piece), None past the budget."""
    start = time.perf_counter()
    try:
        write_view(build_view(graph, None, False), out, time_budget=budget)
    except subprocess.TimeoutExpired:
        return None
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="gpt2-small")
    ap.add_argument("--svg-budget", type=float, default=60.0)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    forward = build_model("gpt", preset=args.preset, loss=True)
    graphs = {"forward": forward, "forward+backward": with_backward(forward)}
    with tempfile.TemporaryDirectory() as d, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        for name, g in graphs.items():
            path = Path(d) / f"{name}.html"
            start = time.perf_counter()
            write_html(g, path, fold=False)
            written = time.perf_counter() - start
            boxes = len(build_view(g, None, False).items)
            t = page_times(browser, path, "decoder/layer_11/self_attn/head_11/softmax")
            svg = svg_seconds(g, Path(d) / f"{name}.svg", args.svg_budget)
            print(f"{args.preset} {name}, every primitive, unfolded: {boxes} boxes "
                  f"({len(g.nodes)} nodes)")
            print(f"  write page {written:.1f} s, {path.stat().st_size / 1e6:.1f} MB; "
                  f"load in Chromium {t['load_s']:.2f} s")
            print(f"  open one block {t['expand_one_ms']:.0f} ms, search {t['search_ms']:.0f} ms, "
                  f"reveal a head's softmax {t['reveal_ms']:.0f} ms, open every block "
                  f"{t['expand_all_ms']:.0f} ms ({t['boxes_all_open']} boxes drawn), "
                  f"close all {t['collapse_all_ms']:.0f} ms")
            page = written + t["load_s"]
            print("  peer, dot laying out the whole graph as one SVG: " + (
                f"{svg:.1f} s; ratio page (write + load) / SVG {page / svg:.2f}" if svg else
                f"over {args.svg_budget:g} s (stopped); ratio under {page / args.svg_budget:.2f}"))
            print(f"  page errors: {t['errors'] or 'none'}")
        browser.close()


if __name__ == "__main__":
    main()
