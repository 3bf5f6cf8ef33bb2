"""The diff view: Post-LN vs Pre-LN marks exactly the LayerNorms that moved (and the final
one that only Pre-LN has), read back from the SVG that ``dot`` draws."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from tgraph.models import build_model
from tgraph.render import render_diff

SVG = "{http://www.w3.org/2000/svg}"
XLINK = "{http://www.w3.org/1999/xlink}"


def marked(path) -> dict[str, list[str]]:
    """SVG node class -> tooltips of the nodes carrying it."""
    out: dict[str, list[str]] = {}
    for g in ET.parse(path).getroot().iter(f"{SVG}g"):
        classes = g.get("class", "").split()
        if "node" in classes:
            tip = next((a.get(f"{XLINK}title") for a in g.iter(f"{SVG}a")), "")
            for c in classes[1:]:
                out.setdefault(c, []).append(tip)
    return out


def test_post_vs_pre_ln_moves_exactly_the_layernorms(tmp_path):
    post = build_model("gpt", preset="tiny", n_layers=2, norm="post")
    pre = build_model("gpt", preset="tiny", n_layers=2, norm="pre")
    render_diff(post, pre, tmp_path / "d.svg")
    m = marked(tmp_path / "d.svg")
    layer_lns = sorted(n.name for n in pre.nodes if n.op == "layernorm" and "/layer_" in n.scope)
    assert len(layer_lns) == 4
    assert sorted(t.split(" (")[0] for t in m["moved"]) == layer_lns
    assert [t.split(" (")[0] for t in m["added"]] == ["decoder/ln_f/layernorm"]
    assert "removed" not in m and "changed" not in m


def test_identical_graphs_mark_nothing_and_a_changed_attr_is_changed(tmp_path):
    a = build_model("gpt", preset="tiny", n_layers=1)
    render_diff(a, build_model("gpt", preset="tiny", n_layers=1), tmp_path / "same.svg")
    assert not {"moved", "added", "removed", "changed"} & set(marked(tmp_path / "same.svg"))
    b = build_model("gpt", preset="tiny", n_layers=1, activation="relu")
    c = build_model("gpt", preset="tiny", n_layers=1, eps=1e-6)
    render_diff(b, c, tmp_path / "eps.svg")
    m = marked(tmp_path / "eps.svg")
    assert {t.split(" (")[1].split(")")[0] for t in m["changed"]} == {"layernorm"}
    assert "moved" not in m
