"""The HTML viewer in a real browser: headless Chromium (Debian's package, which the
Makefile's bootstrap installs) driven by Playwright. The page loads without console errors
in each view; opening a block adds exactly its layout's boxes without overlaps, and closing
it restores the page; search reveals a node; the heatmap's cells read back the attention
computed independently in float64; a page of hostile names runs none of them."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import tgraph as tg
from tests.test_viewer import HOSTILE, hostile_graph
from tests.viewer_reference import first_layer_attention
from tgraph.models import build_model
from tgraph.render.html import write_html
from tgraph.render.layout import OPENABLE
from tgraph.render.values import collect_values, value_feeds
from tgraph.render.view import build_view

playwright = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not "
                                 "installed (pip install playwright; it is in the dev extra)")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("Chromium is not installed and the Makefile's bootstrap could not install it "
                "(apt-get install chromium)", allow_module_level=True)

TEXT = "the cat sat"
JSON_ROUNDING = 5e-7  # the page keeps 6 decimals


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    d = tmp_path_factory.mktemp("viewer")
    g = build_model("gpt", preset="tiny", loss=True)
    params = tg.init_params(g, seed=3)
    feeds, labels = value_feeds(g, TEXT)
    values = collect_values(g, feeds, params, labels)
    write_html(g, d / "gpt.html", backward=True, level=2, values=values)
    write_html(hostile_graph(), d / "hostile.html", depth=None)
    return {"gpt": d / "gpt.html", "hostile": d / "hostile.html", "params": params,
            "tokens": feeds["tokens"]}


class Page:
    def __init__(self, browser, path):
        self.errors: list[str] = []
        self.page = browser.new_page(viewport={"width": 1300, "height": 850})
        self.page.set_default_timeout(5000)
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(path.as_uri())
        self.page.wait_for_selector("g.node")

    def keys(self) -> list[str]:
        return self.page.eval_on_selector_all("#viewport g.node", "gs => gs.map(g => g.dataset.key)")

    def data(self, expr: str):
        return self.page.evaluate(
            f"(() => {{ const D = JSON.parse(document.getElementById('tgraph-data')"
            f".textContent); return {expr}; }})()")

    def overlaps(self) -> list:
        """Pairs of drawn boxes whose outlines (a box's first shape, not its text, which the
        browser's fonts may make wider than dot measured) intersect."""
        boxes = self.page.evaluate("""Array.from(document.querySelectorAll('#viewport g.node'))
            .map(g => { const b = g.querySelector('polygon, path, ellipse').getBBox(),
                              m = g.transform.baseVal[0].matrix;
                        return [b.x + m.e, b.y + m.f, b.width, b.height, g.dataset.key]; })""")
        b = np.array([x[:4] for x in boxes])
        x0, y0, x1, y1 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
        hit = ((x0[:, None] < x1[None] - 0.5) & (x0[None] < x1[:, None] - 0.5)
               & (y0[:, None] < y1[None] - 0.5) & (y0[None] < y1[:, None] - 0.5))
        np.fill_diagonal(hit, False)
        return [(boxes[i][4], boxes[j][4]) for i, j in zip(*np.nonzero(np.triu(hit)))]


@pytest.fixture()
def gpt(browser, pages):
    p = Page(browser, pages["gpt"])
    yield p
    p.page.close()


def test_every_view_loads_without_console_errors(gpt):
    names = gpt.data("D.views.map(v => v.name)")
    assert names == ["forward", "backward", "compiled"]
    for i, _ in enumerate(names):
        gpt.page.select_option("#view-select", str(i))
        assert len(gpt.keys()) > 3
        assert not gpt.overlaps()
    assert gpt.errors == []


def test_every_label_fits_inside_its_box(gpt):
    """Text is drawn at the width dot measured, whatever font the browser has: no label
    spills out of its box. The page's text is made wider than dot measured it (letter
    spacing, as a wider fallback font would), and still fits."""
    gpt.page.add_style_tag(content="#viewport text { letter-spacing: 2px; }")
    gpt.page.click("#expand-all")
    spill = gpt.page.evaluate("""Array.from(document.querySelectorAll('#viewport g.node'))
        .flatMap(g => { const b = g.querySelector('polygon, path, ellipse').getBBox();
                        return Array.from(g.querySelectorAll('text')).map(t => {
                          const r = t.getBBox();
                          return [g.dataset.key, t.textContent, r.x - b.x, b.x + b.width - r.x - r.width]; }); })
        .filter(([k, text, left, right]) => left < -1 || right < -1)""")
    assert spill == []
    assert gpt.page.eval_on_selector_all("#viewport g.node text", "ts => ts.length") > 20


def test_opening_a_block_adds_its_boxes_and_closing_restores(gpt):
    before = gpt.keys()
    block = "scope:decoder/layer_0"
    assert block in before
    children = gpt.data("D.views[0].layouts['decoder/layer_0'].nodes.map(n => n.key)")
    gpt.page.click(f'g.node[data-key="{block}"]')
    after = gpt.keys()
    assert sorted(after) == sorted([k for k in before if k != block] + children)
    assert not gpt.overlaps()
    gpt.page.click('rect.frame[data-scope="decoder/layer_0"]', position={"x": 4, "y": 4})
    assert sorted(gpt.keys()) == sorted(before)
    gpt.page.click("#expand-all")
    everything = gpt.keys()
    ops = gpt.data("Object.keys(D.views[0].nodes)")
    assert set(ops) <= set(everything) and not any(k.startswith("scope:") for k in everything)
    assert not gpt.overlaps()
    assert gpt.errors == []


def test_search_reveals_a_node_inside_closed_blocks(gpt):
    name = "decoder/layer_0/self_attn/head_0/softmax"
    assert name not in gpt.keys()
    gpt.page.fill("#search", "head_0/softmax")
    assert gpt.page.inner_text("#results li") == f"{name} — softmax"
    gpt.page.click("#results li")
    assert name in gpt.keys()
    assert gpt.page.get_attribute("g.node.sel", "data-key") == name
    info = gpt.page.inner_text("#info")
    assert "softmax" in info and "float32[1×11×11]" in info and "mean ± std" in info
    lit = gpt.page.eval_on_selector_all("g.node.hl", "gs => gs.map(g => g.dataset.key)")
    assert "in:tokens" in lit and "out:logits" in lit  # back to the input, on to the outputs
    assert gpt.errors == []


def test_search_finds_a_folded_copy_through_its_drawn_box(gpt):
    gpt.page.fill("#search", "layer_1/self_attn/head_3/softmax")
    assert gpt.page.inner_text("#results li").endswith("— softmax (folded)")
    gpt.page.press("#search", "Enter")
    assert gpt.page.get_attribute("g.node.sel", "data-key") == \
        "decoder/layer_0/self_attn/head_0/softmax"
    info = gpt.page.inner_text("#info")
    assert "decoder/layer_1/self_attn/head_3/softmax" in info and "drawn as" in info
    shown = gpt.page.get_attribute("#heatmap", "data-node")
    assert shown == "decoder/layer_1/self_attn/head_3/softmax"  # its own pattern, not head_0's


@pytest.mark.parametrize("head", [0, 3])
def test_heatmap_cells_read_back_the_float64_attention(gpt, pages, head):
    gpt.page.select_option("#layer-select", "decoder/layer_0/self_attn")
    gpt.page.select_option("#head-select", label=str(head))
    cells = gpt.page.eval_on_selector_all(
        "#heatmap rect.cell", "rs => rs.map(r => [+r.dataset.q, +r.dataset.k, +r.dataset.v])")
    T = len(TEXT)
    assert len(cells) == T * T
    got = np.zeros((T, T))
    for q, k, v in cells:
        got[q, k] = v
    want, bound = first_layer_attention(pages["params"], pages["tokens"], head)
    assert np.all(np.abs(got - want) <= bound + JSON_ROUNDING)
    labels = gpt.page.eval_on_selector_all("#heatmap text", "ts => ts.map(t => t.textContent)")
    assert labels == list(TEXT) * 2  # keys along the top, queries down the side


def test_hostile_names_run_no_script_and_show_as_written(browser, pages):
    p = Page(browser, pages["hostile"])
    assert p.page.evaluate("window.__pwned") is None
    assert p.page.inner_text("#side h1") == HOSTILE[0]
    p.page.fill("#search", "relu")
    p.page.click("#results li")
    info = p.page.inner_text("#info")
    assert HOSTILE[2] in info.replace("\n", " ") or HOSTILE[2] in info
    texts = p.page.eval_on_selector_all("#viewport text", "ts => ts.map(t => t.textContent)")
    assert any("<img" in t for t in texts)  # drawn as text, not parsed as markup
    assert p.page.evaluate("window.__pwned") is None and p.errors == []
    p.page.close()


@pytest.mark.slow
def test_gpt2_small_every_primitive_opens_and_responds(browser, tmp_path):
    g = build_model("gpt", preset="gpt2-small")
    write_html(g, tmp_path / "big.html", fold=False)
    p = Page(browser, tmp_path / "big.html")
    p.page.set_default_timeout(60000)  # a loaded CI machine; times are in benchmarks/
    p.page.click("#expand-all")
    drawn = p.keys()
    svg_boxes = len(build_view(g, None, False, expand=OPENABLE).items)  # the SVG's boxes
    assert len(drawn) == svg_boxes and not any(k.startswith("scope:") for k in drawn)
    assert not p.overlaps()
    # the whole graph on one screen: boxes only, no labels or edges (level of detail)
    shown = "sel => Array.from(document.querySelectorAll(sel)).filter(e => e.getClientRects().length).length"
    assert p.page.evaluate(f"({shown})('#viewport g.edge')") == 0
    assert p.page.evaluate(f"({shown})('#viewport g.node text')") == 0
    p.page.click("#collapse-all")
    p.page.fill("#search", "layer_11/self_attn/head_11/softmax")
    p.page.press("#search", "Enter")
    assert p.page.get_attribute("g.node.sel", "data-key") == \
        "decoder/layer_11/self_attn/head_11/softmax"
    # centred on it at reading size: labels and edges are drawn again
    assert p.page.evaluate(f"({shown})('#viewport g.edge')") > 0
    assert p.page.evaluate(f"({shown})('#viewport g.node text')") > 0
    assert p.errors == []
    p.page.close()
