"""The diff view: Post-LN vs Pre-LN marks exactly the LayerNorms that moved (and the final
one that only Pre-LN has), read back from the SVG that ``dot`` draws."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from dot_layout import read_layout

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
    drawn = [n for n in layer_lns if "/layer_0/" in n]  # layers fold: layer_0 stands for both
    assert sorted(t.split(" (")[0] for t in m["moved"]) == drawn
    assert [t.split(" (")[0] for t in m["added"]] == ["decoder/ln_f/layernorm"]
    assert "removed" not in m and "changed" not in m
    render_diff(post, pre, tmp_path / "all.svg", fold=False)
    m = marked(tmp_path / "all.svg")
    assert sorted(t.split(" (")[0] for t in m["moved"]) == layer_lns


def test_readme_diff_folds_split_heads_like_render(tmp_path):
    """The README's command (split heads, one layer): one head drawn, as render draws it,
    and a picture no bigger than the batched one's."""
    areas = {}
    for heads in ("split", "batched"):
        post = build_model("gpt", preset="tiny", n_layers=1, norm="post", heads=heads)
        pre = build_model("gpt", preset="tiny", n_layers=1, norm="pre", heads=heads)
        render_diff(post, pre, tmp_path / f"{heads}.dot")
        d = read_layout(tmp_path / f"{heads}.dot")
        x0, y0, x1, y1 = d["bb"]
        areas[heads] = (x1 - x0) * (y1 - y0)
        heads_drawn = [c["tooltip"] for c in d["clusters"].values()
                       if c["tooltip"].rpartition("/")[2].startswith("head_")]
        assert heads_drawn == (["decoder/layer_0/self_attn/head_0"] if heads == "split" else [])
        tips = " ".join(n.get("tooltip", "") for n in d["nodes"].values())
        assert "head_1" not in tips and "head_3" not in tips
    assert areas["split"] <= 1.25 * areas["batched"]
