"""Diagrams checked by laying them out with the real ``dot`` and reading its JSON and SVG:
clusters against scopes, boxes per depth, folding, edge shapes against the IR, weights,
residuals, the backward view, escaping, and the fallbacks."""

from __future__ import annotations

import json
import subprocess
import xml.etree.ElementTree as ET
from collections import Counter

import numpy as np
import pytest
from click.testing import CliRunner

from tgraph import builder as tb
from tgraph.cli import main
from tgraph.errors import TGraphError
from tgraph.ir import Graph
from tgraph.models import build_model
from tgraph.render import render
from tgraph.render.hierarchy import split_scope
from tgraph.shapes import fmt_shape
from tgraph.summary import human

SVG = "{http://www.w3.org/2000/svg}"
XLINK = "{http://www.w3.org/1999/xlink}"


def laid_out(graph, tmp_path, **kw) -> dict:
    """Render to .dot, lay it out with dot -Tjson; nodes and clusters keyed by gvid."""
    path = tmp_path / "g.dot"
    render(graph, path, **kw)
    out = json.loads(subprocess.run(["dot", "-Tjson", str(path)], capture_output=True,
                                    check=True).stdout)
    objs = out["objects"]
    n_sub = out.get("_subgraph_cnt", 0)
    clusters = {i: o for i, o in enumerate(objs[:n_sub]) if o["name"].startswith("cluster")}
    nodes = {o["_gvid"]: o for o in objs[n_sub:]}
    return {"clusters": clusters, "nodes": nodes, "edges": out.get("edges", [])}


def kinds(node) -> set[str]:
    return set(node.get("class", "").split())


def of_kind(d, kind):
    return {i: n for i, n in d["nodes"].items() if kind in kinds(n)}


def node_name(tooltip: str) -> str:
    return tooltip.split(" (")[0]


def innermost_cluster(d, gvid):
    inside = [c for c in d["clusters"].values() if gvid in c.get("nodes", [])]
    return min(inside, key=lambda c: len(c.get("nodes", [])), default=None)


@pytest.fixture(scope="module")
def gpt2():
    return build_model("gpt", preset="tiny", n_layers=2)


def test_clusters_nest_like_scopes_and_ops_sit_in_their_scope(gpt2, tmp_path):
    d = laid_out(gpt2, tmp_path, fold=False)
    prefixes = {"/".join(split_scope(n.scope)[:i]) for n in gpt2.nodes
                for i in range(1, len(split_scope(n.scope)) + 1)}
    assert {c["tooltip"] for c in d["clusters"].values()} == prefixes
    for c in d["clusters"].values():
        for child in c.get("subgraphs", []):
            if child in d["clusters"]:
                inner = d["clusters"][child]["tooltip"]
                assert inner.rpartition("/")[0] == c["tooltip"]
    by_name = {n.name: n for n in gpt2.nodes}
    ops = of_kind(d, "op")
    assert len(ops) == len(gpt2.nodes)
    for gvid, node in ops.items():
        ir = by_name[node_name(node["tooltip"])]
        home = innermost_cluster(d, gvid)
        assert (home["tooltip"] if home else "") == ir.scope


@pytest.mark.parametrize("depth", [0, 1, 2, 3, 4, 5])
def test_depth_collapses_deeper_scopes_into_one_box_each(gpt2, tmp_path, depth):
    d = laid_out(gpt2, tmp_path, depth=depth, fold=False)
    paths = [split_scope(n.scope) for n in gpt2.nodes]
    expected_boxes = {p[:depth] for p in paths if len(p) >= depth}
    assert len(of_kind(d, "block")) == len(expected_boxes)
    assert len(of_kind(d, "op")) == sum(len(p) < depth for p in paths)


def test_twelve_identical_layers_fold_into_one_box(tmp_path):
    g = build_model("gpt", preset="tiny", n_layers=12)
    folded = laid_out(g, tmp_path, depth=2)
    blocks = of_kind(folded, "block")
    layer = [b for b in blocks.values() if "folded" in kinds(b)]
    assert len(layer) == 1 and "layer ×12" in layer[0]["label"]
    layer_params = sum(int(np.prod(p.shape)) for p in g.params if p.name.startswith("decoder/layer_"))
    assert f"params ×12 · {human(layer_params // 12)} each = {human(layer_params)}" \
        in layer[0]["label"]
    full = laid_out(g, tmp_path)  # every primitive of one layer and one head
    titles = [c["label"] for c in full["clusters"].values()]
    assert sum("layer ×12" in t for t in titles) == 1
    assert sum("head ×4" in t for t in titles) == 1
    per_head = sum(n.scope.startswith("decoder/layer_0/self_attn/head_0") for n in g.nodes)
    per_layer = sum(f"{n.scope}/".startswith("decoder/layer_0/") for n in g.nodes)
    outside = sum(not n.scope.startswith("decoder/layer_") for n in g.nodes)
    assert len(of_kind(full, "op")) == outside + per_layer - 3 * per_head
    unfolded = laid_out(g, tmp_path, fold=False)
    assert not any("×" in c["label"] for c in unfolded["clusters"].values())
    assert not of_kind(unfolded, "folded")
    assert len(of_kind(unfolded, "op")) == len(g.nodes)


def test_every_edge_is_labelled_with_the_shape_of_its_value(gpt2, tmp_path):
    d = laid_out(gpt2, tmp_path, fold=False)
    by_name = {n.name: n for n in gpt2.nodes}
    ir_of = {i: by_name.get(node_name(n.get("tooltip", ""))) for i, n in d["nodes"].items()}
    expected = Counter()
    for n in gpt2.nodes:
        for v in {id(v): v for v in n.inputs if v.kind in ("input", "intermediate")}.values():
            expected[(v.node.name if v.node else v.name, n.name, fmt_shape(v.shape))] += 1
    for name, v in gpt2.outputs.items():
        expected[(v.node.name, name, fmt_shape(v.shape))] += 1
    drawn = Counter()
    for e in d["edges"]:
        tail, head = d["nodes"][e["tail"]], d["nodes"][e["head"]]
        if e.get("style") == "invis":  # keeps Q, K, V in order; draws nothing
            continue
        if "weight" in kinds(tail):
            assert not e.get("label")
            continue
        src = ir_of[e["tail"]].name if ir_of[e["tail"]] else tail["tooltip"]
        dst = ir_of[e["head"]].name if ir_of[e["head"]] else head["tooltip"]
        drawn[(src, dst, e["label"].removeprefix("shape of "))] += 1  # dotted: shape only
    assert drawn == expected


def test_weights_are_small_nodes_beside_their_op_never_inputs(gpt2, tmp_path):
    d = laid_out(gpt2, tmp_path, fold=False)
    inputs = of_kind(d, "input")
    assert sorted(n["tooltip"] for n in inputs.values()) == sorted(v.name for v in gpt2.inputs)
    weights = of_kind(d, "weight")
    outgoing = Counter(e["tail"] for e in d["edges"])
    incoming = Counter(e["head"] for e in d["edges"])
    by_name = {n.name: n for n in gpt2.nodes}
    for gvid, w in weights.items():
        assert incoming[gvid] == 0 and outgoing[gvid] == 1
        (e,) = [e for e in d["edges"] if e["tail"] == gvid]
        consumer = d["nodes"][e["head"]]
        assert w["tooltip"] in {v.name for v in by_name[node_name(consumer["tooltip"])].inputs}
        assert innermost_cluster(d, gvid) == innermost_cluster(d, e["head"])
    uses = sum(v.kind == "param" for n in gpt2.nodes for v in n.inputs)
    assert len(weights) == uses  # the tied embedding is drawn once per use


def test_residual_adds_and_scalar_constants(gpt2, tmp_path):
    d = laid_out(gpt2, tmp_path, fold=False)
    residual_edges = [e for e in d["edges"] if "residual" in e.get("class", "")]
    assert len(residual_edges) == 2 * 2  # attention and FFN skip, two layers
    for e in residual_edges:
        assert "residual" in kinds(d["nodes"][e["head"]])
        assert d["nodes"][e["head"]]["tooltip"].split(" (")[1].startswith("add")
    assert not of_kind(d, "const")  # 1/√d_k is written into its op, not drawn as a node
    assert sum("× 1/√16" in n["label"] for n in of_kind(d, "op").values()) == 2 * 4


def test_backward_view_mirrors_scopes_with_saved_activations_and_gradients(tmp_path):
    g = build_model("gpt", preset="tiny", n_layers=1, heads="batched", loss=True)
    d = laid_out(g, tmp_path, backward=True, fold=False)
    tips = {c["tooltip"] for c in d["clusters"].values()}
    assert "backward" in tips and "backward/decoder/layer_0/self_attn" in tips
    grads = of_kind(d, "grad")
    assert len(grads) == len(g.params)
    assert all("∂L/∂" in n["label"] or "&#8706;L" in n["label"] for n in grads.values())
    saved = [e for e in d["edges"] if "saved" in e.get("class", "")]
    assert saved
    for e in saved:  # forward activation -> the backward op that reads it
        assert "backward" not in kinds(d["nodes"][e["tail"]])
        assert "backward" in kinds(d["nodes"][e["head"]])
    with pytest.raises(TGraphError, match="--loss"):
        render(build_model("gpt", preset="tiny", n_layers=1), tmp_path / "x.dot", backward=True)


def hostile_graph() -> Graph:
    g = Graph('g"<b>&amp;\\N')
    x = g.input('x"<i>\\G\n}', ("B", 4), "float32")
    with g.scope('a<b>&"c"\\l'):
        y = tb.matmul(x, g.param("w{|}<>", (4, 4)))
    g.set_output("out</text>]]>", tb.relu(y))
    return g


def test_hostile_names_are_shown_as_written(tmp_path):
    path = tmp_path / "h.svg"
    render(hostile_graph(), path)
    root = ET.parse(path).getroot()  # still well-formed XML
    texts = {t.text.replace("\u2060", "") for t in root.iter(f"{SVG}text")}  # word joiner
    assert 'a<b>&"c"\\l' in texts
    assert 'input x"<i>\\G }' in texts
    assert "w{|}<>" in texts
    assert "output out</text>]]>" in texts
    titles = {a.get(f"{XLINK}title").replace("\u2060", "") for a in root.iter(f"{SVG}a")}
    assert 'x"<i>\\G }' in titles


def test_without_dot_the_dot_file_is_still_written(gpt2, tmp_path, monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(TGraphError, match=r"not installed.*g\.dot"):
        render(gpt2, tmp_path / "g.svg")
    assert (tmp_path / "g.dot").read_text().startswith("digraph")
    assert not (tmp_path / "g.svg").exists()


def test_past_the_time_budget_a_collapsed_depth_is_drawn(tmp_path, monkeypatch):
    run = subprocess.run

    def slow_when_big(cmd, input, **kw):
        if input.count(b"->") > 500:
            raise subprocess.TimeoutExpired(cmd, kw["timeout"])
        return run(cmd, input=input, **kw)

    monkeypatch.setattr("tgraph.render.api.subprocess.run", slow_when_big)
    g = build_model("gpt", preset="tiny", n_layers=12)
    r = render(g, tmp_path / "g.svg", fold=False, time_budget=1.0)
    assert r.depth == 2
    assert "drew depth 2" in r.note
    assert (tmp_path / "g.full.dot").exists()
    assert "layer ×12" in (tmp_path / "g.svg").read_text()


def test_heat_shading_darkens_the_costliest_block(gpt2, tmp_path):
    d = laid_out(gpt2, tmp_path, depth=1, color="flops")
    blocks = list(of_kind(d, "block").values())
    darkest = min(blocks, key=lambda b: sum(int(b["fillcolor"][i:i + 2], 16) for i in (1, 3, 5)))
    assert darkest["tooltip"] == "decoder"


def test_cli_render_O2_backward_draws_the_training_graph_that_runs(tmp_path):
    """-O2 --backward draws the forward+backward graph compiled whole, as training runs it:
    attention's gradient one op (reading the weights its forward kept), and the FFN's
    forward loop computing Φ for the backward loop, not the gradient of the compiled
    forward (a gelu_grad recomputing Φ)."""
    out = tmp_path / "b.dot"
    r = CliRunner().invoke(main, ["render", "gpt", "--preset", "tiny", "--set", "n_layers=1",
                                  "--loss", "--backward", "-O", "2", "-o", str(out)])
    assert r.exit_code == 0, r.output
    text = out.read_text()
    assert "fused 1: + → Φ → ×" in text and "Attention′" in text and "GELU′" not in text


def test_cli_render_and_diff(tmp_path):
    runner = CliRunner()
    out = tmp_path / "g.svg"
    r = runner.invoke(main, ["render", "gpt", "--preset", "tiny", "--depth", "2", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert ET.parse(out).getroot().tag == f"{SVG}svg"
    r = runner.invoke(main, ["render", "gpt", "-o", str(tmp_path / "g.txt")])
    assert r.exit_code == 1 and "error:" in r.output
    out = tmp_path / "d.dot"
    r = runner.invoke(main, ["diff", "gpt", "gpt", "--preset", "tiny", "--set", "n_layers=1",
                             "--set-a", "norm=post", "--set-b", "norm=pre", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "moved" in out.read_text()
