"""Names from a graph file cannot inject into DOT, SVG or a path: every hostile name is
drawn with the real ``dot``, the SVG parsed for scripts, links and external references, the
DOT re-read by ``dot`` and its attributes listed; default file names stay in the cwd."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner
from hostile_checks import DANGEROUS_ATTRS, dot_objects, svg_injections
from hypothesis import given, settings
from hypothesis import strategies as st

from tgraph import builder as tb
from tgraph.cli import main
from tgraph.io import save_graph
from tgraph.ir import Graph
from tgraph.render import render
from tgraph.render.escape import Digraph, dot_quote, html_label, html_text
from tgraph.sanitize import clean_text, clip, default_output

HOSTILE = [
    '<x> URL="javascript:alert(1)" image="/etc/passwd" tooltip=<y>',
    "<b>",
    "<script>alert(1)</script>",
    '<?xml-stylesheet href="http://e.invalid/s.css"?>',
    '"]; evil [URL="javascript:alert(1)"]; x ["',
    "a\\",
    "\\N\\G\\L\\",
    "}} digraph { x [image=\"/etc/passwd\"] }",
    "\ud800 lone surrogate \udfff",
    "ctl\x00\x07\x1b[31m\n\r\t",
    "a:b:n",
    "",
    "x" * 20_000,
]
def graph_named(name: str) -> Graph:
    """``name`` in every position a file can hold one: graph, input, scope, param, output."""
    g = Graph(name)
    x = g.input(name + "i", ("B", 4), "float32")
    with g.scope(name + "/" + name):
        y = tb.matmul(x, g.param(name + "w", (4, 4)))
    g.set_output(name + "o", tb.relu(y))
    return g


@pytest.mark.parametrize("name", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_names_inject_nothing(name, tmp_path):
    g = graph_named(name)
    render(g, tmp_path / "g.svg")
    assert svg_injections((tmp_path / "g.svg").read_bytes()) == []
    render(g, tmp_path / "g.dot")  # the .dot tgraph writes is one dot can read
    for obj in dot_objects(tmp_path / "g.dot"):
        assert not DANGEROUS_ATTRS & obj.keys(), obj


def test_every_dot_token_is_quoted_or_checked_html():
    g = Digraph("<x>")
    g.node("<n>", html_label(html_text("<t>")), tooltip="<tip>", **{"<k>": "<v>"})
    g.edge("a:b", "<c>", label="<l>")
    g.same_rank("source", ["<n>"])
    src = g.source
    for token in ("<x>", "<n>", "<tip>", "<k>", "<v>", "a:b", "<c>", "<l>"):
        assert f'"{token}"' in src
    assert "<&lt;t&gt;>" in src
    with pytest.raises(ValueError, match="well-formed"):
        html_label("<B>" + "unescaped <i>")


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_dot_quote_is_one_closed_string(text):
    q = dot_quote(text)
    assert q[0] == q[-1] == '"' and q[-2] != "\\"
    # inside: plain characters, escaped quotes, and backslashes doubled and then held apart
    # from what follows by a word joiner (so no \N expansion, no escaped closing quote)
    assert re.fullmatch(r'(?:[^"\\]|\\"|\\\\\u2060)*', q[1:-1])


def test_dot_reads_back_every_quoted_string(tmp_path):
    """200 arbitrary strings as tooltips: dot parses the file and returns each as written."""
    import random

    rng = random.Random(0)
    alphabet = '<>"\\&;:{}[]=\n\t\x00 ab\u2060\ud800\ufffe\U0001f600é'
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 30)))
             for _ in range(200)]
    g = Digraph("t")
    for i, t in enumerate(texts):
        g.node(f"n{i}", tooltip=t, label=t)
    (tmp_path / "t.dot").write_text(g.source)
    nodes = {o["name"]: o for o in dot_objects(tmp_path / "t.dot")[1:]}
    for i, t in enumerate(texts):
        shown = nodes[f"n{i}"].get("tooltip", "").replace("\\\\\u2060", "\\")
        assert shown == clean_text(t, 1000)


def test_clean_text_and_clip():
    assert clean_text("a\x00b\ud800c\uffff") == "a b c "
    long = clean_text("x" * 10_000)
    assert len(long) == 200 and "…" in long
    assert len(clip("y" * 10**7)) <= 122
    assert clean_text(float("nan")) == "nan"


@pytest.mark.parametrize("name, expected", [
    ("../../x", "_.._x.svg"), ("/abs/x", "_abs_x.svg"), ("", "graph.svg"), ("..", "graph.svg"),
    ("a b\\c", "a_b_c.svg"), ("gpt", "gpt.svg"), ("\ud800", "_.svg")])
def test_default_output_is_a_base_name_here(name, expected):
    p = default_output(name, ".svg")
    assert p == Path(expected) and p.parent == Path(".")


def test_render_without_o_writes_only_in_the_cwd(tmp_path, monkeypatch):
    here = tmp_path / "a" / "b"
    here.mkdir(parents=True)
    for i, name in enumerate(["../../x", "/abs/y", "../" * 20 + "etc/z"]):
        save_graph(graph_named(name), here / f"g{i}.json")
    monkeypatch.chdir(here)
    before = set(tmp_path.rglob("*"))
    for i in range(3):
        r = CliRunner().invoke(main, ["render", f"g{i}.json", "--depth", "0"])
        assert r.exit_code == 0, r.output
    new = set(tmp_path.rglob("*")) - before
    assert {p.parent for p in new} == {here} and len(new) == 3


def test_a_name_that_is_a_lone_bracket_renders(tmp_path):
    """Graphviz 2.43 rejects an HTML-label text that is exactly "]" (found by hypothesis
    in test_fuzz): it goes as an entity, and the SVG shows the name as written."""
    g = Graph("brackets")
    x = g.input("x", ("B", 4), "float32")
    g.set_output("y", tb.relu(tb.matmul(x, g.param("]", (4, 4)))))
    render(g, tmp_path / "g.svg")
    texts = [t.text for t in ET.parse(tmp_path / "g.svg").iter("{http://www.w3.org/2000/svg}text")]
    assert "]" in texts
