"""A viewer page in headless Chromium with one head's attention pattern shown, saved as a
PNG (the README's picture). Needs Playwright and Debian's chromium (make bootstrap).

    python examples/viewer_screenshot.py att.html decoder/layer_0/self_attn 1 out.png
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright


def main(page_path: str, layer: str, head: str, out: str) -> None:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"))
        page = browser.new_page(viewport={"width": 1500, "height": 950})
        page.goto(Path(page_path).resolve().as_uri())
        page.wait_for_selector("g.node")
        page.select_option("#layer-select", layer)
        page.select_option("#head-select", label=head)
        node = page.eval_on_selector("#heatmap", "h => h.dataset.node")
        page.fill("#search", node)  # opens the blocks around the head's softmax, selects it
        page.keyboard.press("Enter")
        page.wait_for_timeout(300)
        page.screenshot(path=out)
        browser.close()
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
