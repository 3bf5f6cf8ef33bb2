"""Each malformed input the hardening issue lists, through the CLI: one `error:` line of at
most 300 characters naming what is wrong, exit code 1 (2 for a usage error), nothing
written; and the library checks behind them (attr schema, init specs, sizes, headers)."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

import tgraph as tg
from examples.demo import attention_block
from tgraph.cli import main
from tgraph.errors import AttrError
from tgraph.ir import Graph
from tgraph.render import render


@pytest.fixture()
def files(tmp_path):
    g = attention_block()
    tg.save_graph(g, tmp_path / "g.json")
    tg.save_weights(tg.init_params(g, 0), tmp_path / "w.npz")
    return tmp_path


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(r, code=1) -> str:
    assert r.exit_code == code, (r.exit_code, r.output, r.exception)
    lines = r.stderr.strip().splitlines()
    assert lines, r.output
    assert len(lines[-1]) <= 300 and (lines[-1].startswith("error: ") if code == 1 else
                                      lines[-1].startswith("Error: ")), lines
    return lines[-1]


def mutate(path, fn):
    d = json.loads(path.read_text())
    fn(d)
    path.write_text(json.dumps(d))
    return path


def node(d, op):
    return next(n for n in d["nodes"] if n["op"] == op)


GRAPH_MUTATIONS = [  # (mutation, words the error must contain)
    (lambda d: node(d, "softmax")["attrs"].update(axis=True), "attr axis must be an integer"),
    (lambda d: node(d, "mask")["attrs"].update(window="-inf"), "attr window must be an integer"),
    (lambda d: node(d, "softmax")["attrs"].update(colour=1), "unknown attr 'colour'"),
    (lambda d: node(d, "matmul").update(op="softmax"), "softmax node"),
    (lambda d: node(d, "matmul").update(scope=3), "scope must be a string, got int"),
    (lambda d: d["nodes"][0].update(scope="a/" * 100), "at most 64 levels deep"),
    (lambda d: d["params"][0].update(init={"dist": "normal", "std": -1}), "init must be"),
    (lambda d: d["params"][0].update(init={"dist": "uniform", "limit": 1e308}), "init must be"),
    (lambda d: d["params"][0].update(init=5), "init must be"),
    (lambda d: d["params"].__setitem__(0, ["w", "float32"]), "params[0] must be an object"),
    (lambda d: d["meta"].update(dims=[1]), "meta.dims must be an object"),
    (lambda d: d["meta"].update(dims={"B": -3}), "meta.dims.'B' must be an integer from 1"),
    (lambda d: d["meta"].update(text={"codec": "chars", "chars": "abc"}),
     "meta.text has no 'context'"),
    (lambda d: d["meta"].update(text={"codec": "chars", "chars": "aa", "context": 4}),
     "meta.text.chars must be a string of distinct characters"),
    (lambda d: d["outputs"].update(y="attn/head_0/nothing"), "names undefined value"),
    (lambda d: d["outputs"].update({"o" * 70_000: d["outputs"]["y"]}), "at most 1024"),
    (lambda d: d.update(name="\ud800"), "lone surrogate"),
    (lambda d: d["inputs"][0].update(shape=[2, "T²"]), "inputs[0].shape[1] must be"),
    (lambda d: d["inputs"][0].update(shape=[-2, 8, 32]), "inputs[0].shape[0] must be"),
    (lambda d: d["consts"][0].update(shape=[1]), "data is not a float32 array of shape 1"),
]


def test_scopes_1000_deep_are_refused_before_drawing(tmp_path):
    g = Graph("deep")
    x = g.input("x", (2,))
    with g.scope("a/" * 1000):
        y = tg.builder.relu(x)
    g.set_output("y", y)
    with pytest.raises(tg.TGraphError, match="scopes nest at most 64 levels"):
        render(g, tmp_path / "g.svg")


def test_a_nan_constant_renders(files):
    path = mutate(files / "g.json", lambda d: d["consts"][0].update(data=float("nan")))
    r = invoke("render", path, "-o", files / "g.svg")
    assert r.exit_code == 0, r.output
    assert "NaN" in (files / "g.svg").read_text()


@pytest.mark.parametrize("i", range(len(GRAPH_MUTATIONS)))
def test_mutated_graph_file_is_one_clear_error(files, i):
    fn, words = GRAPH_MUTATIONS[i]
    path = mutate(files / "g.json", fn)
    for cmd in (["info", path], ["render", path, "-o", files / "g.svg"],
                ["run", path, "--random"]):
        line = one_line_error(invoke(*cmd))
        assert words in line, line
    assert not (files / "g.svg").exists()


@pytest.mark.parametrize("data, words", [
    (b"\xff\xfe{}", "not UTF-8"), (b"[" * 100_000, "nested too deeply"),
    (b'{"format": "tgraph-graph", "version": 1' + b"9" * 5000 + b"}", "malformed JSON")])
def test_unreadable_graph_files(files, data, words):
    (files / "x.json").write_bytes(data)
    assert words in one_line_error(invoke("info", files / "x.json"))


def test_attr_schema_applies_when_building_too():
    g = Graph("g")
    x = g.input("x", (2, 3))
    with pytest.raises(AttrError, match=r"layernorm node .*attr eps must be a finite number > 0"):
        tg.builder.apply("layernorm", x, g.param("g", (3,)), g.param("b", (3,)), eps="1e-5")


@pytest.fixture(autouse=True)
def one_gib(monkeypatch):
    """The same memory limit on every machine, so size checks give one verdict."""
    monkeypatch.setenv("TGRAPH_MAX_BYTES", str(1 << 30))


def test_sizes_are_checked_before_allocating(files):
    line = one_line_error(invoke("run", "gpt", "--preset", "tiny", "--random",
                                 "--dim", "B=10000000", "--dim", "T=64"))
    assert "random feed 'tokens' int64[10000000×64] would need 4.8 GiB, more than the " \
           "1.0 GiB" in line
    line = one_line_error(invoke("run", "gpt", "--preset", "tiny", "--random",
                                 "--dim", "B=100000", "--dim", "T=64"))
    assert "running 'gpt-tiny' with B=100000, T=64 would need 16.8 GiB" in line  # the memory plan's peak
    line = one_line_error(invoke("run", "gpt", "--set", "d_model=100000", "--set", "n_heads=1",
                                 "--random"))
    assert "the parameters (up to 'decoder/layer_0/self_attn/head_0/w_q' float32[100000×100000]) would need 37.4 GiB" in line
    g = Graph("big")
    g.param("w", (100_000, 100_000))
    with pytest.raises(tg.TGraphError, match=r"would need 37\.3 GiB"):
        tg.init_params(g)


def npy_bytes(shape, dtype="<f4") -> bytes:
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    text = repr(header).encode("latin1")
    text += b" " * (63 - (len(text) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text


def test_npz_headers_are_checked_before_data(files):
    bomb = files / "bomb.npz"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:  # 10⁶×10⁶ declared
        z.writestr("attn/head_0/w_q.npy", npy_bytes((10**6, 10**6)) + b"\0" * 1000)
    line = one_line_error(invoke("run", files / "g.json", "--weights", bomb, "--random"))
    assert "has shape 1000000×1000000, expected" in line
    (files / "x.npy").write_bytes(npy_bytes((10**6, 10**6)))
    line = one_line_error(invoke("run", files / "g.json", "--random", "--feed",
                                 f"x={files / 'x.npy'}"))
    assert "would need 3.6 TiB" in line
    extra = dict(np.load(files / "w.npz"))
    np.savez(files / "extra.npz", **extra, typo=np.zeros(3, "float32"))
    line = one_line_error(invoke("run", files / "g.json", "--weights", files / "extra.npz",
                                 "--random"))
    assert "holds 'typo', which graph" in line
    np.save(files / "w.npy", np.zeros(3))
    assert "single .npy array" in one_line_error(
        invoke("run", files / "g.json", "--weights", files / "w.npy"))
    (files / "t.npz").write_text("not a zip")
    assert "is not a .npz archive" in one_line_error(
        invoke("run", files / "g.json", "--weights", files / "t.npz"))


@pytest.mark.parametrize("args, words, code", [
    (["info", "gpt", "--dim", "T=²"], "needs an integer from 1 to 2^48", 2),
    (["info", "gpt", "--dim", "T=" + "9" * 25], "needs an integer from 1 to 2^48", 2),
    (["info", "gpt", "--dim", "X=3"], "the graph has no symbol 'X' (its symbols: B, T)", 2),
    (["info", "gpt", "--dim", "T=3", "--dim", "T=4"], "--dim 'T' is given twice", 2),
    (["info", "gpt", "--set", "n_layers=99999999999999999999"], "must be at most 1,000", 1),
    (["info", "gpt", "--set", "eps=-1"], "eps=-1.0 must be a number between 0 and 1", 1),
    (["info", "gpt", "--set", "eps=nan"], "eps=nan must be", 1),
    (["info", "gpt", "--set", "x" * 100_000 + "=1"], "unknown config key", 1),
    (["train", "gpt", "--task", "text", "--lr", "nan", "-o", "w.npz"], "not a finite", 2),
    (["train", "gpt", "--task", "text", "--steps", "-5", "-o", "w.npz"], "--steps", 2),
    (["train", "gpt", "--task", "text", "--batch", "0", "-o", "w.npz"], "--batch", 2),
    (["train", "gpt", "--task", "text", "--seq-len", "0", "-o", "w.npz"], "--seq-len", 2),
    (["run", "gpt", "--preset", "tiny", "--random", "--dim", "T=65"],
     "dim T=65 is more than this model's max_len=64", 1),
])
def test_options_are_validated(args, words, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert words in one_line_error(invoke(*args), code)
    assert list(tmp_path.iterdir()) == []


def test_train_on_a_binary_file(tmp_path):
    (tmp_path / "b.bin").write_bytes(bytes(range(256)) * 10)
    line = one_line_error(invoke("train", "gpt", "--task", "text", "--data",
                                 tmp_path / "b.bin", "-o", tmp_path / "w.npz"))
    assert "is not UTF-8 text" in line
    assert list(tmp_path.iterdir()) == [tmp_path / "b.bin"]


def test_token_id_minus_one_is_the_vocabulary_error(files):
    np.save(files / "t.npy", np.array([[1, -1]]))
    assert "holds id -1; ids must be in [0, 64)" in one_line_error(invoke(
        "run", "gpt", "--preset", "tiny", "--set", "vocab=64", "--random",
        "--feed", f"tokens={files / 't.npy'}"))


def test_build_writes_nothing_unless_all_outputs_can_be_written(tmp_path):
    r = invoke("build", "gpt", "--preset", "tiny", "-o", tmp_path / "g.json",
               "--weights", tmp_path / "missing" / "w.npz")
    one_line_error(r)
    assert list(tmp_path.iterdir()) == []


def test_echoed_input_is_capped(files):
    line = one_line_error(invoke("info", "x" * 10**6))
    assert "…" in line


def test_unique_naming_is_linear():
    """16k same-named ops in one scope: the suffix counter makes each name O(1)."""
    g = Graph("g")
    x = g.input("x", (2,))
    names = g._names
    probes = []

    class Counting(set):
        def __contains__(self, item):
            probes.append(1)
            return super().__contains__(item)

    g._names = Counting(names)
    for _ in range(16_000):
        x = tg.builder.relu(x)
    assert len(probes) < 3 * 16_000
    assert g.nodes[-1].name == "relu_15999"
