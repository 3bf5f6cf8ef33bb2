"""The command line as a whole: every command's help has an example, option names agree
across commands, exit codes follow click's convention (0 ok, 1 user error as one line on
stderr, 2 usage error), no output file is ever left half written, --json parses."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import click
import numpy as np
import pytest
from click.testing import CliRunner

import tgraph as tg
from examples.demo import attention_block
from tgraph import progress
from tgraph.cli import common, main

COMMANDS = sorted(main.commands)
# Spellings that drift in from other tools, and the name tgraph uses instead.
NOT_OUR_NAMES = {"--dims": "--dim", "--feeds": "--feed", "--weight": "--weights",
                 "--params": "--weights", "--device": "--backend", "--out": "-o",
                 "--config": "--set", "--override": "--set", "--plugins": "--plugin",
                 "--model": "GRAPH|MODEL", "--graph": "GRAPH|MODEL", "--quite": "--quiet"}
SHORT_FLAGS = {"-o": "--output", "-q": "--quiet", "-v": "--verbose", "-h": "--help"}


@pytest.fixture()
def files(tmp_path):
    g = attention_block()
    tg.save_graph(g, tmp_path / "g.json")
    tg.save_weights(tg.init_params(g, 0), tmp_path / "w.npz")
    np.save(tmp_path / "x.npy", np.ones((2, 8, 32), "float32"))
    np.save(tmp_path / "bad_x.npy", np.ones((2, 8, 31), "float32"))
    return tmp_path


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def options(name):
    return [p for p in main.commands[name].params if isinstance(p, click.Option)]


# ----- help and names ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help_with_an_example(name):
    out = invoke(name, "--help")
    assert out.exit_code == 0
    assert "Example" in out.output, f"tgraph {name} --help shows no example"
    assert f"tgraph {name}" in out.output.split("Example", 1)[1]


@pytest.mark.parametrize("name", COMMANDS)
def test_option_names_agree_across_commands(name):
    for opt in options(name):
        for flag in opt.opts + opt.secondary_opts:
            assert flag not in NOT_OUR_NAMES, \
                f"tgraph {name} {flag}: tgraph calls this {NOT_OUR_NAMES[flag]}"
            if flag in SHORT_FLAGS:
                assert SHORT_FLAGS[flag] in opt.opts, f"tgraph {name}: {flag} is not {SHORT_FLAGS[flag]}"
        if "--output" in opt.opts:
            assert "-o" in opt.opts, f"tgraph {name} --output has no -o"


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_takes_plugins(name):
    assert any("--plugin" in o.opts for o in options(name)), f"tgraph {name} has no --plugin"


@pytest.mark.parametrize("name", COMMANDS)
def test_a_graph_or_model_argument_comes_with_the_model_options(name):
    args = [p for p in main.commands[name].params if isinstance(p, click.Argument)]
    if any(a.metavar == "GRAPH|MODEL" for a in args):
        flags = {f for o in options(name) for f in o.opts}
        assert {"--preset", "--set"} <= flags, f"tgraph {name} lacks --preset/--set"


# ----- exit codes -------------------------------------------------------------------------------
@pytest.mark.parametrize("args", [
    ["info"],                                   # missing argument
    ["info", "{g}", "--bogus"],                 # unknown option
    ["info", "{g}", "--dim", "B"],              # not KEY=VALUE
    ["info", "{g}", "--dim", "B=two"],          # not a positive integer
    ["info", "{g}", "--depth", "-1"],
    ["run", "{g}", "--backend", "tpu"],         # not a choice
    ["no-such-command"],
])
def test_usage_errors_exit_2(files, args):
    out = invoke(*(a.format(g=files / "g.json") for a in args))
    assert out.exit_code == 2, out.output


@pytest.mark.parametrize("args, message", [
    (["info", "missing.json"], "cannot read graph file 'missing.json'"),
    (["info", "no_such_model"], "'no_such_model' is neither a graph file nor a model"),
    (["info", "{d}/g.json", "--preset", "tiny"], "--preset/--set/--loss apply to a model name"),
    (["run", "{d}/g.json"], "the graph has parameters: give --weights"),
    (["run", "{d}/g.json", "--weights", "{d}/missing.npz"], "cannot read weights file"),
    (["run", "{d}/g.json", "--weights", "{d}/w.npz", "--feed", "x={d}/bad_x.npy"],
     "feed 'x' has shape 2×8×31"),
    (["run", "{d}/g.json", "--random", "-o", "{d}/no_dir/out.npz"], "cannot write"),
    (["ops", "--check", "no_such_op"], "unknown op 'no_such_op'"),
])
def test_user_errors_exit_1_with_one_line(files, args, message):
    out = invoke(*(a.format(d=files) for a in args))
    assert out.exit_code == 1
    assert out.stderr.startswith("error: ") and message in out.stderr
    assert len(out.stderr.splitlines()) == 1


def test_a_real_process_exits_0_1_2_without_a_traceback(files):
    def tgraph(*args):
        return subprocess.run([sys.executable, "-m", "tgraph", *args], cwd=files, check=False,
                              capture_output=True, text=True, timeout=120)

    ok = tgraph("run", "g.json", "--weights", "w.npz", "--feed", "x=x.npy")
    assert ok.returncode == 0 and ok.stdout.startswith("y: float32[2, 8, 32]")
    user = tgraph("run", "g.json", "--feed", "x=x.npy")
    assert user.returncode == 1 and user.stdout == ""
    assert user.stderr == "error: the graph has parameters: give --weights W.npz (or --random)\n"
    usage = tgraph("run", "g.json", "--dim", "T")
    assert usage.returncode == 2 and "Traceback" not in usage.stderr
    assert "--dim expects KEY=VALUE" in usage.stderr


# ----- no partial output ------------------------------------------------------------------------
def test_a_failure_while_writing_leaves_no_file(files, monkeypatch):
    def half_then_fail(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", half_then_fail)
    before = set(files.iterdir())
    out = invoke("run", files / "g.json", "--random", "-o", files / "out.npz")
    assert out.exit_code == 1 and out.stderr == "error: No space left on device\n"
    assert set(files.iterdir()) == before  # neither out.npz nor a temporary file


@pytest.mark.parametrize("name", [n for n in COMMANDS
                                  if any("-o" in o.opts for o in options(n))])
def test_commands_that_fail_write_nothing(files, name):
    """Each command that writes -o, given a graph file it cannot load, writes nothing."""
    g = json.loads((files / "g.json").read_text())
    g["nodes"][0]["op"] = "no_such_op"
    (files / "broken.json").write_text(json.dumps(g))
    n_args = sum(isinstance(p, click.Argument) and p.required
                 for p in main.commands[name].params)
    before = set(files.iterdir())
    out = invoke(name, *[files / "broken.json"] * n_args, "-o", files / "out.file")
    assert out.exit_code in (1, 2) and "Traceback" not in out.output
    assert set(files.iterdir()) == before


# ----- --json -----------------------------------------------------------------------------------
def test_info_json(files):
    out = invoke("info", files / "g.json", "--json", "--dim", "T=4", "--depth", "1")
    assert out.exit_code == 0
    s = json.loads(out.stdout)
    g = attention_block()
    assert s["total"]["params"] == g.param_count() == sum(r["params"] for r in s["rows"])
    assert s["dims"] == {"B": 2, "T": 4} and s["nodes"] == len(g.nodes)
    assert [r["scope"] for r in s["rows"]] == ["attn", "add_norm"]
    assert s["inputs"] == {"x": "float32[B×T×32]"}


def test_ops_json_lists_every_registered_op():
    from tgraph.ops import all_ops

    rows = json.loads(invoke("ops", "--json").stdout)
    assert [r["name"] for r in rows] == list(all_ops())
    assert {"name", "signature", "doc", "vjp", "source"} <= set(rows[0])


def test_models_json():
    from tgraph.models import MODELS

    out = invoke("models", "--json")
    assert out.exit_code == 0, out.output
    models = json.loads(out.stdout)
    assert [m["name"] for m in models] == list(MODELS)
    assert all("tiny" in m["presets"] for m in models)


# ----- progress and verbosity -------------------------------------------------------------------
class Stream:
    def __init__(self, tty):
        self.tty, self.text = tty, ""

    def isatty(self):
        return self.tty

    def write(self, s):
        self.text += s

    def flush(self):
        pass


@click.command()
@click.option("--tty", is_flag=True)
@common.verbosity_options
def looper(tty):
    stream = Stream(tty)
    with progress.Progress(20, "train", stream=stream) as bar:
        for _ in range(20):
            bar.update(loss=0.5)
    common.status("status line")
    common.status("detail line", common.VERBOSE)
    click.echo(repr(stream.text))


@pytest.mark.parametrize("args, terminal, shows", [
    ([], True, "bar"), ([], False, None), (["-v"], False, "lines"), (["-q"], True, None),
])
def test_progress_on_a_terminal_quiet_in_pipes(monkeypatch, args, terminal, shows):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: terminal, raising=False)
    monkeypatch.setattr(progress, "_isatty", lambda s: terminal)
    out = CliRunner().invoke(looper, args + (["--tty"] if terminal else []))
    assert out.exit_code == 0
    drawn = ast.literal_eval(out.stdout.splitlines()[-1])  # the repr of what the bar wrote
    if shows is None:
        assert drawn == ""
    elif shows == "bar":
        assert drawn.startswith("\rtrain [")
        assert "20/20" in drawn and "loss 0.5" in drawn and drawn.endswith("\n")
    else:
        assert len(drawn.splitlines()) == 10 and drawn.splitlines()[-1].startswith(
            "train [########################] 20/20")
    assert ("status line" in out.stderr) == ("-q" not in args)
    assert ("detail line" in out.stderr) == ("-v" in args)


def test_quiet_and_verbose_exclude_each_other():
    assert CliRunner().invoke(looper, ["-q", "-v"]).exit_code == 2
