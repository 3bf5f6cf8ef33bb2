"""A fixed sample of the hostile-input fuzzer (tests/fuzzing.py) in ``make test``: 1,000+
seeded cases of mutated graph files, mutated weights, hostile arguments and hostile names,
each judged by the fuzzer's oracle (no traceback, one-line errors, no hang, no partial
file, nothing outside the output folder, no injection in any SVG or DOT written), plus
hypothesis-chosen names through build, save, load and render. ``make fuzz N=...`` runs more."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from fuzzing import FAILURES, Seeds, run_cases
from hostile_checks import svg_injections
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tgraph as tg
from tgraph import builder as tb
from tgraph.ir import Graph
from tgraph.render import render

CHUNKS, PER_CHUNK = 10, 100  # 1,000 cases, in chunks so xdist spreads them


@pytest.fixture(scope="module")
def seeds():
    with tempfile.TemporaryDirectory() as tmp:
        yield Seeds.make(Path(tmp))


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_fuzz_sample(chunk, seeds, monkeypatch):
    monkeypatch.setenv("TGRAPH_MAX_BYTES", str(2 << 30))
    # the 20 s hang limit is make fuzz's measure on a quiet machine; here only a real
    # hang may fail the suite, never a slow shared CI host
    counts, failures = run_cases(PER_CHUNK, chunk * PER_CHUNK, seeds=seeds,
                                 every_subprocess=50, hang_s=600)
    assert sum(counts[k] for k in ("ok", "error", "usage", *FAILURES)) == PER_CHUNK
    assert not failures, "\n".join(o.detail[:600] for o in failures)
    assert counts["ok"] and counts["error"]  # the sample reaches both sides


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(min_size=0, max_size=40), min_size=5, max_size=5))
def test_any_names_survive_save_load_and_render(names):
    """Whatever the names, a graph saves; loading it back either works or is one clear
    GraphFileError; whatever loads renders to an SVG with nothing injected."""
    graph_name, input_name, scope, param, output = names
    g = Graph(graph_name)
    try:
        x = g.input(input_name or "x", ("B", 4))
        with g.scope(scope):
            y = tb.matmul(x, g.param(param or "w", (4, 4)))
        g.set_output(output or "y", tb.relu(y))
    except tg.TGraphError:
        return  # a duplicate name, refused while building
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "g.json"
        tg.save_graph(g, path)
        try:
            g = tg.load_graph(path)
        except tg.TGraphError as e:
            assert "\n" not in str(e) and len(str(e)) < 400
        render(g, Path(tmp) / "g.svg")
        assert svg_injections((Path(tmp) / "g.svg").read_bytes()) == []
