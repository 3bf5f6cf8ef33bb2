"""Issue 13: diagrams a learner can trust, checked on dot's own JSON and SVG output: block
numbers equal `tgraph info`, reading order inside heads, shape-only edges, compact clusters,
contrast and type size, and byte-identical re-renders."""

from __future__ import annotations

import re
from functools import lru_cache

import pytest
from dot_layout import kinds, laid_out, of_kind

from tgraph.models import MODELS, build_model
from tgraph.summary import human, summarize


@lru_cache(maxsize=None)
def model(name: str, **kw):
    return build_model(name, preset="tiny", **kw)


@lru_cache(maxsize=None)
def info_rows(name: str, depth: int) -> dict[str, tuple[int, int]]:
    s = summarize(model(name), depth=depth)
    rows = {r.scope: (r.params, r.flops) for r in s.rows}
    rows[""] = (s.total.params, s.total.flops)
    return rows


def folded_members(path: str, span: str) -> list[str]:
    """decoder/layer_0 with 'layer_0 … layer_3' -> decoder/layer_0 … decoder/layer_3."""
    first, last = span.split(" … ")
    base, lo, hi = re.sub(r"\d+$", "", first), re.search(r"\d+$", first), re.search(r"\d+$", last)
    parent = path.rpartition("/")[0]
    return [f"{parent}/{base}{i}".lstrip("/") for i in range(int(lo[0]), int(hi[0]) + 1)]


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("fold", [True, False])
def test_block_numbers_are_info_rows_per_scope_and_per_copy(name, fold, tmp_path):
    checked = 0
    for depth in (0, 1, 2, 3):
        d = laid_out(model(name), tmp_path, depth=depth, fold=fold)
        for block in of_kind(d, "block").values():
            path, lines = block["tooltip"], block["lines"]
            scope = "" if path == model(name).name else path
            rows = info_rows(name, max(depth, 1))
            text = " | ".join(lines)
            if "folded" in kinds(block):
                members = folded_members(scope, lines[1])
                p, f = rows[members[0]]
                assert all(rows[m] == (p, f) for m in members), members
                assert f"params ×{len(members)} · {human(p)} each = " \
                       f"{human(sum(rows[m][0] for m in members))}" in text
                assert f"FLOPs ×{len(members)} · {human(f)} each = " \
                       f"{human(sum(rows[m][1] for m in members))}" in text
            else:
                p, f = rows[scope]
                assert f"params {human(p)} · FLOPs {human(f)}" in text, (scope, text)
            checked += 1
    assert checked >= 4


def test_tied_table_counts_once_in_the_overview(tmp_path):
    d = laid_out(model("gpt"), tmp_path, depth=0)
    (box,) = of_kind(d, "block").values()
    total = summarize(model("gpt"), depth=0).total.params
    assert total == model("gpt").param_count() == 120_576
    assert f"params {human(total)} ·" in " ".join(box["lines"])


def ir_nodes(g) -> dict:
    return {n.name: n for n in g.nodes}


def op_of(g, node):
    return ir_nodes(g).get(node.get("tooltip", "").split(" (")[0])


def edge_end_x(e) -> float:
    """x where the edge meets its head (the arrow tip, else the last spline point)."""
    first = e["pos"].split()[0]
    if first.startswith("e,"):
        return float(first[2:].split(",")[0])
    return float(e["pos"].split()[-1].split(",")[0])


READING_CASES = [("gpt", {}, True), ("gpt", {}, False), ("bert", {}, True),
                 ("transformer", {}, True), ("vit", {}, True),
                 ("gpt", {"heads": "batched"}, True)]


@pytest.mark.parametrize("name,cfg,fold", READING_CASES)
def test_projections_are_named_by_role_and_read_q_k_v_in_head_order(name, cfg, fold, tmp_path):
    g = build_model(name, preset="tiny", **cfg)
    d = laid_out(g, tmp_path, fold=fold)
    rows: dict[tuple, list] = {}
    for node in of_kind(d, "op").values():
        n = op_of(g, node)
        params = [v for v in n.inputs if v.kind == "param"]
        if n.op == "matmul" and len(params) == 1:
            short = params[0].name.rpartition("/")[2]
            assert node["lines"] == [f"x·W{short[1:]}"]
            scope = n.scope.split("/")
            if short in ("w_q", "w_k", "w_v"):
                attn = tuple(s for s in scope if not s.startswith("head_"))
                head = next((int(s[5:]) for s in scope if s.startswith("head_")), 0)
                x, y = map(float, node["pos"].split(","))
                rows.setdefault(attn, []).append((x, y, head, "qkv".index(short[-1])))
        if n.op == "add" and len(params) == 1:
            assert node["lines"] == [f"+ {params[0].name.rpartition('/')[2]}"]
    assert rows
    for attn, row in rows.items():
        assert len({y for _, y, _, _ in row}) == 1, attn  # one rank
        order = [(head, role) for _, _, head, role in sorted(row)]
        assert order == sorted(order), (attn, order)  # heads by index, then Q, K, V


@pytest.mark.parametrize("name", ["gpt", "bert", "transformer"])
def test_matmul_operands_enter_left_to_right(name, tmp_path):
    g = model(name)
    d = laid_out(g, tmp_path)
    by_gvid = {i: op_of(g, n) for i, n in d["nodes"].items()}
    checked = 0
    for gvid, node in of_kind(d, "op").items():
        n = by_gvid[gvid]
        if n.op != "matmul" or any(v.kind == "param" for v in n.inputs):
            continue
        ins = {}
        for e in d["edges"]:
            src = by_gvid.get(e["tail"])
            if e["head"] == gvid and src is not None and e.get("style") != "invis":
                ins[src.name] = edge_end_x(e)
        left, right = (v.node.name for v in n.inputs)
        if left in ins and right in ins:
            assert ins[left] < ins[right], n.name
            checked += 1
    assert checked >= 2


def test_shape_only_inputs_are_dotted_shape_of_edges(tmp_path):
    d = laid_out(model("gpt"), tmp_path)
    g = model("gpt")
    by_gvid = {i: op_of(g, n) for i, n in d["nodes"].items()}
    into_positions = [e for e in d["edges"]
                      if by_gvid.get(e["head"]) is not None and by_gvid[e["head"]].op == "positions"]
    assert into_positions
    for e in into_positions:
        assert e["style"] == "dotted" and "shape" in e["class"].split()
        assert e["label"].startswith("shape of ")
    others = [e for e in d["edges"] if e not in into_positions and e.get("style") != "invis"]
    assert not any("shape" in e.get("class", "").split() for e in others)


@pytest.mark.parametrize("depth", [None, 2, 3])
def test_sinusoidal_positions_are_one_box_unless_expanded(depth, tmp_path):
    g = model("transformer")
    table = [n for n in g.nodes if n.scope.endswith("/positions")]
    assert {n.op for n in table} >= {"sin", "cos", "concat", "reshape", "positions"}
    boxes = [b for b in of_kind(laid_out(g, tmp_path, depth=depth), "block").values()
             if b["tooltip"].endswith("/positions")]
    expected = [] if depth == 2 else ["embed/src/positions", "embed/tgt/positions"]
    assert sorted(b["tooltip"] for b in boxes) == expected  # depth 2: inside embed/src
    opened = laid_out(g, tmp_path, depth=depth, expand=("positions",))
    if depth is None or depth > 3:
        drawn = {op_of(g, n).name for n in of_kind(opened, "op").values()}
        assert {n.name for n in table} <= drawn
    assert not any(b["tooltip"].endswith("/positions") and depth is None
                   for b in of_kind(opened, "block").values())


SVG = "{http://www.w3.org/2000/svg}"
NAMED = {"white": "#ffffff", "black": "#000000", "none": None}


def colour(c):
    c = NAMED.get(c, c)
    return c if c and c.startswith("#") and len(c) == 7 else None


def svg_texts(path):
    """(text, font size, text colour, fill of the shape it sits on) for every text, and the
    fills of every cluster (what an edge label may lie on)."""
    import xml.etree.ElementTree as ET

    root = ET.parse(path).getroot()
    found, cluster_fills = [], ["#ffffff"]
    for grp in root.iter(f"{SVG}g"):
        cls = (grp.get("class") or "").split()[:1] and grp.get("class").split()[0]
        if cls not in ("node", "cluster", "edge"):
            continue
        title = grp.find(f"{SVG}title")
        if title is not None and title.text == "legend":  # swatches beside text on the page
            found += [("legend", t.text, float(t.get("font-size")),
                       colour(t.get("fill", "black")), "#ffffff") for t in grp.iter(f"{SVG}text")]
            continue
        shapes = [colour(s.get("fill")) for s in grp.iter() if s.tag in (f"{SVG}polygon", f"{SVG}path",
                                                                  f"{SVG}ellipse")]
        fill = next((f for f in shapes if f), None)
        if cls == "cluster" and fill:
            cluster_fills.append(fill)
        for t in grp.iter(f"{SVG}text"):
            found.append((cls, t.text, float(t.get("font-size")),
                          colour(t.get("fill", "black")), fill))
    return found, cluster_fills


@pytest.mark.parametrize("kw", [{}, {"depth": 1, "color": "flops"}, {"depth": 2, "color": "params"},
                                {"depth": 3, "backward": True}])
def test_text_is_at_least_9pt_and_aa_contrast_on_its_fill(kw, tmp_path):
    from tgraph.render import render
    from tgraph.render.contrast import contrast

    g = build_model("gpt", preset="tiny", loss=bool(kw.get("backward")))
    path = tmp_path / "g.svg"
    render(g, path, **kw)
    texts, cluster_fills = svg_texts(path)
    assert len(texts) > 20
    for cls, text, size, ink, fill in texts:
        assert size >= 9, (text, size)
        behind = cluster_fills if cls == "edge" else [fill or "#ffffff"]
        if cls == "node" and fill is None:  # a plain-text node (the legend) on the page
            behind = ["#ffffff"]
        worst = min(contrast(ink, b) for b in behind)
        assert worst >= 4.5, (text, ink, behind, worst)


def test_rendering_twice_gives_byte_identical_files(tmp_path):
    from tgraph.render import render, render_diff

    def draw(i):
        a = build_model("gpt", preset="tiny", n_layers=1, norm="post")
        b = build_model("gpt", preset="tiny", n_layers=1, norm="pre")
        render_diff(a, b, tmp_path / f"diff{i}.dot")
        render(build_model("transformer", preset="tiny", loss=True), tmp_path / f"t{i}.dot",
               depth=3, backward=True)
        return [(tmp_path / f"{k}{i}.dot").read_bytes() for k in ("diff", "t")]

    first, second = draw(0), draw(1)
    assert first == second


def test_rendering_in_two_processes_gives_byte_identical_files(tmp_path):
    """make gallery in a new process each time: string hashing differs between processes
    (PYTHONHASHSEED), so no set or dict order may reach the file."""
    import os
    import subprocess
    import sys

    def draw(seed):
        env = {**os.environ, "PYTHONHASHSEED": str(seed)}
        for args in (["diff", "gpt", "gpt", "--preset", "tiny", "--set", "n_layers=1",
                      "--set-a", "norm=post", "--set-b", "norm=pre", "-o", f"diff{seed}.dot"],
                     ["render", "transformer", "--preset", "tiny", "--depth", "3",
                      "-o", f"t{seed}.dot"]):
            subprocess.run([sys.executable, "-m", "tgraph", *args], cwd=tmp_path, env=env,
                           check=True, capture_output=True)
        return [(tmp_path / f"{k}{seed}.dot").read_bytes() for k in ("diff", "t")]

    assert draw(1) == draw(2)


def test_backward_at_depth_3_boxes_leaf_blocks_and_keeps_gradients_by_their_op(tmp_path):
    from dot_layout import box

    g = build_model("gpt", preset="tiny", loss=True)
    d = laid_out(g, tmp_path, depth=3, backward=True)
    ops = [n["tooltip"] for n in of_kind(d, "op").values()]
    assert not any(" in backward/decoder/ln_f " in t or " in backward/embed " in t for t in ops)
    blocks = {n["tooltip"] for n in of_kind(d, "block").values()}
    assert "backward/decoder/ln_f" in blocks
    assert any(b.startswith("backward/decoder/layer_") and b.endswith("/ln_1") for b in blocks)
    for gvid, grad in of_kind(d, "grad").items():
        (edge,) = [e for e in d["edges"] if gvid in (e["head"], e["tail"])]
        maker = edge["tail"] if edge["head"] == gvid else edge["head"]
        home = [c for c in d["clusters"].values() if maker in c.get("nodes", [])]
        assert home and all(gvid in c.get("nodes", []) for c in home), grad["lines"]
        inner = min(home, key=lambda c: len(c.get("nodes", [])))
        x0, y0, x1, y1 = box(inner["bb"])
        gx, gy = map(float, grad["pos"].split(","))
        assert x0 <= gx <= x1 and y0 <= gy <= y1  # drawn inside its op's box


README_PICTURES = {  # the README's render commands (gpt tiny unless said)
    "full": ("gpt", {}, {}), "depth0": ("gpt", {}, {"depth": 0}),
    "transformer3": ("transformer", {}, {"depth": 3}),
    "heat": ("gpt", {}, {"depth": 1, "color": "flops"}),
    "backward3": ("gpt", {"loss": True}, {"depth": 3, "backward": True}),
}


@pytest.mark.parametrize("name", sorted(README_PICTURES))
def test_no_cluster_is_taller_than_the_ranks_its_nodes_fill(name, tmp_path):
    from dot_layout import empty_ranks

    model_name, cfg, kw = README_PICTURES[name]
    d = laid_out(build_model(model_name, preset="tiny", **cfg), tmp_path, **kw)
    assert d["clusters"] or name in ("depth0", "heat")
    for scope, empty in empty_ranks(d).items():
        assert empty <= 1, (scope, empty)


def test_unfolded_demo_picture_is_compact(tmp_path):
    """make demo's transformer_full.svg (every head of every layer): at most half the area
    it had (10229×8708 px at 96 dpi, Graphviz 2.43, before issue 13), and every attention
    cluster as tall as its chain of ops (they were stretched up to the encoder's output)."""
    from dot_layout import PX_PER_PT, empty_ranks

    d = laid_out(build_model("transformer", preset="tiny", loss=True), tmp_path, fold=False)
    x0, y0, x1, y1 = d["bb"]
    assert (x1 - x0) * (y1 - y0) * PX_PER_PT ** 2 <= 10229 * 8708 / 2
    attention = {s: v for s, v in empty_ranks(d).items() if "_attn" in s}
    assert len(attention) == (2 + 2 * 2) * (1 + 4 * 2)  # enc self, dec self + cross
    for scope, empty in attention.items():
        assert empty <= 1, (scope, empty)
