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
