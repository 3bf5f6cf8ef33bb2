"""Graph files and weights: exact round trip, and a clear error for every kind of bad file."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

import tgraph as tg
from examples.demo import attention_block
from tgraph.errors import GraphFileError, ShapeError, TGraphError, UnknownOpError
from tgraph.io import graph_to_json


@pytest.fixture()
def saved(tmp_path):
    g = attention_block()
    path = tmp_path / "g.json"
    tg.save_graph(g, path)
    return g, path


def test_round_trip_is_exact(saved, tmp_path):
    g, path = saved
    g2 = tg.load_graph(path)
    assert graph_to_json(g2) == graph_to_json(g)
    tg.save_graph(g2, tmp_path / "again.json")
    assert (tmp_path / "again.json").read_text() == path.read_text()
    params = tg.init_params(g, 1)
    x = {"x": np.random.default_rng(0).standard_normal((2, 8, 32)).astype("float32")}
    np.testing.assert_array_equal(tg.run(g, x, params)["y"], tg.run(g2, x, params)["y"])


def test_weights_round_trip(tmp_path):
    g = attention_block()
    params = tg.init_params(g, 2)
    tg.save_weights(params, tmp_path / "w.npz")
    back = tg.load_weights(tmp_path / "w.npz", g)
    assert back.keys() == params.keys()
    for k in params:
        np.testing.assert_array_equal(back[k], params[k])


def edit(path, fn):
    d = json.loads(path.read_text())
    fn(d)
    path.write_text(json.dumps(d))
    return path


def test_malformed_json(tmp_path):
    (tmp_path / "x.json").write_text('{"format": "tgraph-graph",')
    with pytest.raises(GraphFileError, match="malformed JSON at line 1"):
        tg.load_graph(tmp_path / "x.json")


def test_unknown_version(saved):
    _, path = saved
    with pytest.raises(GraphFileError, match="version 99 is not supported"):
        tg.load_graph(edit(path, lambda d: d.update(version=99)))


def test_not_a_graph_file(tmp_path):
    (tmp_path / "x.json").write_text("[1, 2]")
    with pytest.raises(GraphFileError, match="not a tgraph graph file"):
        tg.load_graph(tmp_path / "x.json")


def test_unknown_op_names_the_op_and_plugins(saved):
    _, path = saved
    with pytest.raises(UnknownOpError, match=r"unknown op 'flash_attn'.*--plugin"):
        tg.load_graph(edit(path, lambda d: d["nodes"][3].update(op="flash_attn")))


def test_undefined_value_or_cycle(saved):
    _, path = saved

    def cycle(d):  # the first node reads the last node's output
        d["nodes"][0]["inputs"][0] = d["nodes"][-1]["outputs"][0]["name"]
    with pytest.raises(GraphFileError, match="uses undefined value .* cycle"):
        tg.load_graph(edit(path, cycle))


def test_shape_mismatch_in_file(saved):
    _, path = saved
    with pytest.raises(ShapeError, match="shape rule gives"):
        tg.load_graph(edit(path, lambda d: d["nodes"][0]["outputs"][0].update(shape=["B", 3])))


def test_missing_key(saved):
    _, path = saved
    with pytest.raises(GraphFileError, match=r"g\.json: nodes\[0\] has no 'inputs'"):
        tg.load_graph(edit(path, lambda d: d["nodes"][0].pop("inputs")))


def test_weights_file_holding_a_pickle_is_refused(tmp_path):
    path = tmp_path / "w.npz"
    np.savez(path, evil=np.array([{"a": 1}], dtype=object))
    with pytest.raises(GraphFileError, match=r"member 'evil' holds Python objects \(a pickle\)"):
        tg.load_weights(path)
    raw = tmp_path / "raw.npz"
    raw.write_bytes(pickle.dumps({"w": 1}))
    with pytest.raises(GraphFileError):
        tg.load_weights(raw)


def test_weights_missing_a_parameter(tmp_path):
    g = attention_block()
    params = tg.init_params(g)
    params.pop("attn/head_2/w_v")
    tg.save_weights(params, tmp_path / "w.npz")
    with pytest.raises(TGraphError, match="missing parameter 'attn/head_2/w_v'"):
        tg.load_weights(tmp_path / "w.npz", g)


def test_failed_write_leaves_no_file(tmp_path):
    g = attention_block()
    g.meta["bad"] = object()  # not JSON data
    with pytest.raises(TypeError):
        tg.save_graph(g, tmp_path / "g.json")
    assert list(tmp_path.iterdir()) == []


def test_written_files_get_the_usual_permissions(tmp_path):
    tg.save_graph(attention_block(), tmp_path / "g.json")
    (tmp_path / "plain").write_text("x")
    assert (tmp_path / "g.json").stat().st_mode == (tmp_path / "plain").stat().st_mode
