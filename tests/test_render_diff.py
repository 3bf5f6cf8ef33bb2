"""The diff view: Post-LN vs Pre-LN marks exactly the LayerNorms that moved (and the final
one that only Pre-LN has), read back from the SVG that ``dot`` draws."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
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


def bezier_points(pos: str, steps: int = 10) -> list[tuple[float, float]]:
    """Points along the cubic Bézier pieces of a dot edge's ``pos`` (control points are not
    on the curve, so they are not what a reader sees)."""
    ctrl = [tuple(map(float, q.split(","))) for q in pos.split() if not q.startswith(("e,", "s,"))]
    out = []
    for i in range(0, len(ctrl) - 3, 3):
        p0, p1, p2, p3 = ctrl[i:i + 4]
        for k in range(steps + 1):
            u = k / steps
            out.append(tuple((1 - u) ** 3 * a + 3 * (1 - u) ** 2 * u * b + 3 * (1 - u) * u * u * c
                             + u ** 3 * d for a, b, c, d in zip(p0, p1, p2, p3)))
    return out


@pytest.mark.parametrize("heads", ["split", "batched"])
@pytest.mark.parametrize("n_layers", [1, 2])
def test_moved_and_removed_edges_stay_inside_the_scope_that_holds_both_ends(heads, n_layers,
                                                                            tmp_path):
    """The README's diff: an edge whose ends share a block (a layer's residual add to its
    LayerNorm) is drawn inside that block's box, never looping out through its neighbours."""
    from dot_layout import box

    post = build_model("gpt", preset="tiny", n_layers=n_layers, norm="post", heads=heads)
    pre = build_model("gpt", preset="tiny", n_layers=n_layers, norm="pre", heads=heads)
    render_diff(post, pre, tmp_path / "d.dot")
    d = read_layout(tmp_path / "d.dot")
    inside_a_block = 0
    for e in d["edges"]:
        if not {"removed", "moved"} & set(e.get("class", "").split()):
            continue
        holders = [c for c in d["clusters"].values()
                   if {e["tail"], e["head"]} <= set(c.get("nodes", []))]
        if not holders:
            continue  # ends in different top-level blocks: the whole picture holds them
        x0, y0, x1, y1 = box(min(holders, key=lambda c: (box(c["bb"])[2] - box(c["bb"])[0])
                                 * (box(c["bb"])[3] - box(c["bb"])[1]))["bb"])
        inside_a_block += 1
        for x, y in bezier_points(e["pos"]):
            assert x0 - 2 <= x <= x1 + 2 and y0 - 2 <= y <= y1 + 2, (e["tail"], e["head"])
    assert inside_a_block >= 2 * n_layers  # the check is not vacuous
