"""The HTML viewer's data, without a browser: safe embedding, per-scope layouts that compose
to exactly the boxes of the full diagram, statistics and attention patterns checked against
independent float64 NumPy, the CLI, and --attention heatmaps in a real dot SVG."""

from __future__ import annotations

import html.parser
import json
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from click.testing import CliRunner

import tgraph as tg
from tests.viewer_reference import first_layer_attention
from tgraph.cli import main
from tgraph.models import build_model
from tgraph.render.html import embed_json, view_data, write_html
from tgraph.render.layout import OPENABLE, scope_layouts
from tgraph.render.values import collect_values, tensor_stats, value_feeds
from tgraph.render.view import build_view
from tgraph.sanitize import clean_text

HOSTILE = ['</script><script>window.__pwned=1</script>', '<img src=x onerror="__pwned=1">',
           "it's \"quoted\"", "]]><!--", "line\nbreak", "back\\slash", "\u2028sep\ud800"]


def hostile_graph() -> tg.Graph:
    """Every name a user controls, set to something that breaks naive HTML or JS."""
    g = tg.Graph(HOSTILE[0])
    x = g.input(HOSTILE[1], (2, 3), "float32")
    with g.scope(HOSTILE[2]):
        with g.scope(HOSTILE[3]):
            y = tg.builder.relu(x * g.param(HOSTILE[4], (2, 3)))
        y = y + g.param(HOSTILE[5], (3,))
    g.set_output(HOSTILE[6], y)
    return g


def page_data(path) -> dict:
    text = path.read_text(encoding="utf-8")
    m = re.search(r'<script type="application/json" id="tgraph-data">(.*?)</script>', text, re.S)
    return json.loads(m.group(1))


@pytest.fixture(scope="module")
def tiny():
    g = build_model("gpt", preset="tiny")
    return g, tg.init_params(g, seed=3)


def test_embedded_json_cannot_end_its_script_and_reads_back_printable():
    obj = {"names": HOSTILE, HOSTILE[0]: 1}
    text = embed_json(obj)
    assert not set(text) & set("<>&\u2028\u2029")
    assert json.loads(text) == {"names": [clean_text(n, 1 << 30) for n in HOSTILE], HOSTILE[0]: 1}
    assert "\u2028" in json.loads(text)["names"][-1]  # escaped in the file, kept in the data


def test_hostile_names_page_has_only_its_own_two_scripts(tmp_path):
    path = tmp_path / "h.html"
    write_html(hostile_graph(), path)

    class Scripts(html.parser.HTMLParser):
        tags: list = []

        def handle_starttag(self, tag, attrs):
            self.tags.append(tag)

    p = Scripts()
    p.feed(path.read_text(encoding="utf-8"))
    assert p.tags.count("script") == 2 and "img" not in p.tags
    data = page_data(path)  # every name is still there, as data (made printable)
    text = json.dumps(data, ensure_ascii=False)
    for name in HOSTILE[1:]:
        assert json.dumps(clean_text(name), ensure_ascii=False)[1:-1] in text


def test_scope_layouts_compose_to_the_full_diagrams_boxes(tiny):
    from tgraph.autodiff import grad

    g, _ = tiny
    for graph, fold in ((g, True), (g, False), (grad(build_model(
            "gpt", preset="tiny", loss=True), "loss"), True)):
        layouts = {"/".join(s.path): s for s in scope_layouts(graph, fold)}
        ops = [k for s in layouts.values() for i, k in s.keys.items()
               if s.view.items[i].kind == "op"]
        full = build_view(graph, None, fold, expand=OPENABLE)
        want = [i for i in full.items.values() if i.kind == "op"]
        assert len(ops) == len(set(ops)) == len(want)
        for s in layouts.values():  # every block opens a layout; every layout is reachable
            assert set(s.blocks.values()) <= set(layouts)
        reachable = {b for s in layouts.values() for b in s.blocks.values()} | {""}
        assert reachable == set(layouts)


def test_tensor_stats_closed_forms():
    s = tensor_stats(np.arange(16, dtype=np.float32).reshape(4, 4))
    assert s["shape"] == [4, 4] and s["min"] == 0 and s["max"] == 15
    assert s["mean"] == 7.5 and s["std"] == pytest.approx(np.sqrt((16 ** 2 - 1) / 12), rel=1e-15)
    assert s["hist"] == [1] * 16
    bad = tensor_stats(np.array([1.0, np.nan, np.inf, 3.0]))
    assert bad["nonfinite"] == 2 and bad["mean"] == 2.0


def test_attention_patterns_match_float64_numpy(tiny):
    g, params = tiny
    text = "the cat sat on the mat"
    feeds, labels = value_feeds(g, text)
    values = collect_values(g, feeds, params, labels)
    assert len(values.patterns) == 2 * 4  # layers × heads
    for head in range(4):
        p = next(p for p in values.patterns if p.layer == "decoder/layer_0/self_attn"
                 and p.head == head)
        want, bound = first_layer_attention(params, feeds["tokens"], head)
        assert p.queries == p.keys == list(text)
        assert np.all(np.abs(p.weights - want) <= bound)
        assert np.allclose(p.weights.sum(-1), 1, atol=len(text) * 2 ** -23)


def test_every_node_gets_stats_equal_to_its_output(tiny):
    g, params = tiny
    feeds, _ = value_feeds(g, None, random=True, dims={"T": 5})
    values = collect_values(g, feeds, params)
    assert set(values.stats) == {n.name for n in g.nodes}
    logits = tg.run(g, feeds, params)["logits"]
    s = values.stats[g.outputs["logits"].node.name][0]
    assert s["shape"] == [1, 5, 256] and s["mean"] == float(logits.astype(np.float64).mean())


def test_view_data_carries_values_and_facts(tiny):
    g, params = tiny
    feeds, labels = value_feeds(g, "abc")
    data = view_data(g, "forward", values=collect_values(g, feeds, params, labels))
    att = data["attention"][0]
    assert len(att["weights"]) == 3 and att["queries"] == ["a", "b", "c"]
    node = data["nodes"][att["node"]]
    assert node["op"] == "softmax" and node["outs"] == ["float32[B×T×T]"]
    assert data["stats"][att["node"]][0]["shape"] == [1, 3, 3]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_cli_render_html_and_view(tmp_path):
    out = tmp_path / "g.html"
    r = invoke("render", "gpt", "--preset", "tiny", "--loss", "--random", "--dim", "T=6",
               "--backward", "-O2", "-o", out)
    assert r.exit_code == 0, r.output
    assert [v["name"] for v in page_data(out)["views"]] == ["forward", "backward", "compiled"]
    r = invoke("view", "gpt", "--preset", "tiny", "--no-open", "-o", tmp_path / "v.html")
    assert r.exit_code == 0 and (tmp_path / "v.html").is_file()


@pytest.mark.parametrize("level", [1, 2])
def test_every_level_compiles_the_view_and_the_diagram(tmp_path, level):
    out = tmp_path / "g.html"
    r = invoke("render", "gpt", "--preset", "tiny", f"-O{level}", "-o", out)
    assert r.exit_code == 0, r.output
    views = {v["name"]: v for v in page_data(out)["views"]}
    ops = {f["op"] for f in views["compiled"]["nodes"].values()}
    assert ("add" in ops) and (("fused" in " ".join(views["compiled"]["layouts"])) == (level == 2))
    r = invoke("render", "gpt", "--preset", "tiny", f"-O{level}", "-o", tmp_path / "g.dot")
    assert r.exit_code == 0, r.output
    assert ("fused 1:" in (tmp_path / "g.dot").read_text()) == (level == 2)


@pytest.mark.parametrize("args, message", [
    (["--attention", "-o", "a.svg"], "--attention draws the patterns of a run"),
    (["--weights", "w.npz", "-o", "a.html"], "--weights shows values only with an input"),
    (["--text", "héllo", "--set", "vocab=50", "-o", "a.html"], "no text vocabulary"),
])
def test_cli_errors_are_one_line(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    r = invoke("render", "gpt", "--preset", "tiny", *args)
    assert r.exit_code == 1 and message in r.output and not list(tmp_path.iterdir())


def test_attention_heatmaps_in_a_real_svg(tmp_path, tiny):
    g, params = tiny
    tg.save_graph(g, tmp_path / "g.json")
    tg.save_weights(params, tmp_path / "w.npz")
    out = tmp_path / "a.svg"
    r = invoke("render", tmp_path / "g.json", "--weights", tmp_path / "w.npz", "--text", "abcd",
               "--attention", "-o", out)
    assert r.exit_code == 0, r.output
    ns = {"s": "http://www.w3.org/2000/svg"}
    root = ET.parse(out).getroot()
    feeds, _ = value_feeds(g, "abcd")
    softmax = {n.name: n for n in g.nodes if n.op == "softmax"}
    found = 0
    for node in root.iterfind(".//s:g[@class]", ns):
        title = node.find("s:title", ns)
        if "node" not in node.get("class") or title is None:
            continue
        tip = node.find(".//s:a", ns)
        name = tip.get("{http://www.w3.org/1999/xlink}title", "").split(" (")[0] if tip is not None else ""
        if name not in softmax:
            continue
        cells = [p.get("fill") for p in node.iterfind(".//s:polygon", ns)
                 if re.fullmatch(r"#([0-9a-f]{2})\1ff", p.get("fill", ""))]
        assert len(cells) == 16
        if name.startswith("decoder/layer_0/"):
            head = int(re.search(r"head_(\d)", name).group(1))
            want, _ = first_layer_attention(params, feeds["tokens"], head)
            shade = [int(c[1:3], 16) for c in cells]
            expect = np.round(255 * (1 - np.sqrt(want.ravel()))).astype(int)
            assert np.all(np.abs(np.array(shade) - expect) <= 1)  # float32 near a .5 rounds either way
        found += 1
    assert found == 8  # every head of both layers: --attention draws unfolded
