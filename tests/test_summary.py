"""The per-scope summary (``tgraph info``) against counts worked out by hand."""

from __future__ import annotations

import tgraph as tg
from tgraph import builder as tb
from tgraph.summary import TOP_LEVEL, format_table, human, summarize


def two_layer_mlp(d=8, h=32) -> tg.Graph:
    """x[B, d] -> layer_0 (matmul d×h, relu) -> layer_1 (matmul h×d) -> a top-level sum."""
    g = tg.Graph("mlp")
    x = g.input("x", ("B", d), "float32")
    with g.scope("layer_0"):
        y = tb.relu(tb.matmul(x, g.param("w", (d, h))))
    with g.scope("layer_1/proj"):
        y = tb.matmul(y, g.param("w", (h, d)))
    g.set_output("y", tb.sum(y))
    return g


def test_rows_match_hand_counts():
    d, h, b = 8, 32, 5
    s = summarize(two_layer_mlp(d, h), {"B": b}, depth=2)
    rows = {r.scope: r for r in s.rows}
    assert list(rows) == ["layer_0", "layer_1", "layer_1/proj", TOP_LEVEL]
    assert rows["layer_0"].params == d * h and rows["layer_1"].params == h * d
    # matmul: 2·B·d·h; relu: one per element; sum: one per element summed
    assert rows["layer_0"].flops == 2 * b * d * h + b * h
    assert rows["layer_1"].flops == rows["layer_1/proj"].flops == 2 * b * h * d
    assert rows[TOP_LEVEL].flops == b * d
    # float32 activations: matmul and relu outputs in layer_0, one matmul output in layer_1
    assert rows["layer_0"].activation_bytes == 4 * 2 * b * h
    assert rows["layer_1"].activation_bytes == 4 * b * d
    assert rows["layer_0"].outputs == ["B×32"] and rows[TOP_LEVEL].outputs == ["scalar"]
    assert s.total.params == 2 * d * h
    assert s.total.flops == sum(r.flops for r in s.rows if r.depth == 1)
    # peak under the executor's schedule: the matmul output and relu output of layer_0 live
    # together, then are freed one by one
    assert s.peak_bytes == 4 * 2 * b * h


def test_depth_folds_deeper_scopes_into_their_parent():
    g = two_layer_mlp()
    deep, shallow = summarize(g, depth=3), summarize(g, depth=1)
    assert [r.scope for r in shallow.rows] == ["layer_0", "layer_1", TOP_LEVEL]
    assert {r.scope: r.flops for r in shallow.rows}["layer_1"] == \
        {r.scope: r.flops for r in deep.rows}["layer_1/proj"]
    assert summarize(g, depth=0).rows == []
    assert summarize(g, depth=0).total == deep.total


def test_symbolic_dims_default_to_the_graph_hints():
    g = two_layer_mlp()
    g.meta["dims"] = {"B": 3}
    assert summarize(g).dims == {"B": 3}
    assert summarize(g, {"B": 7}).total.flops == 7 * summarize(g, {"B": 1}).total.flops


def test_table_text():
    text = format_table(summarize(two_layer_mlp(), {"B": 5}, depth=2))
    lines = text.splitlines()
    assert lines[0] == "mlp at depth 2 (B=5)"
    assert lines[1].split() == ["scope", "output", "params", "FLOPs", "activations"]
    assert lines[4].startswith("layer_1 ") and lines[5].startswith("  proj ")
    assert lines[-2].split()[:2] == ["total", "512"]


def test_human_units():
    assert [human(n) for n in (999, 1000, 1_234_567)] == ["999", "1.00K", "1.23M"]
    assert [human(n, "B") for n in (1023, 1536, 3 << 20)] == ["1023 B", "1.50 KiB", "3.00 MiB"]
