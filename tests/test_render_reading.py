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
