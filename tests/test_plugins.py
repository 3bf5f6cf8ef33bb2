"""Custom ops as plugins: an installed package registers through the ``tgraph.ops`` entry
point; --plugin and TGRAPH_PLUGINS load a module or file; names are never silently taken
over; a broken plugin is one clear error line; graph files never load code."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import tgraph as tg
from tgraph import builder as tb
from tgraph import plugins
from tgraph.cli import main
from tgraph.errors import TGraphError, UnknownOpError
from tgraph.ops import OpDef, get_op, register_op
from tgraph.ops.registry import _REGISTRY

ROOT = Path(__file__).resolve().parents[1]

CUBE = '''
from tgraph.ops import OpDef, register_op


@register_op
class Cube(OpDef):
    """x³ elementwise."""

    name = "cube"

    def infer(self, types):
        return types[0]

    def kernel(self, xp, x):
        return x * x * x

    def vjp(self, node, grads):
        x = node.inputs[0]
        return [grads[0] * 3 * x * x]
'''


@pytest.fixture()
def registry():
    """Restore the op registry and the record of loaded plugins after the test."""
    ops, loaded = dict(_REGISTRY), set(plugins._loaded)
    yield
    _REGISTRY.clear()
    _REGISTRY.update(ops)
    plugins._loaded.clear()
    plugins._loaded.update(loaded)


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def tgraph_cmd(*args, cwd, env=None):
    return subprocess.run([sys.executable, "-m", "tgraph", *args], cwd=cwd, env=env,
                          check=False, capture_output=True, text=True, timeout=120)


def cube_graph() -> tg.Graph:
    g = tg.Graph("cubed")
    g.set_output("y", g.apply("cube", [g.input("x", ("N",), "float32")]))
    return g


# ----- an installed package ---------------------------------------------------------------
@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The example plugin package pip-installed into its own site folder (no network: no
    dependencies, no build isolation); the environment that puts it on the path."""
    tmp = tmp_path_factory.mktemp("installed")
    src = shutil.copytree(ROOT / "examples" / "custom_op", tmp / "src")  # builds write here
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                    "--no-build-isolation", "--target", str(tmp / "site"), str(src)],
                   check=True, capture_output=True, cwd=tmp)
    return tmp, {**os.environ, "PYTHONPATH": str(tmp / "site")}


@pytest.mark.slow
def test_installed_package_registers_through_its_entry_point(installed):
    tmp, env = installed
    out = tgraph_cmd("ops", "--json", cwd=tmp, env=env)
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["swiglu"]["source"] == rows["rmsnorm"]["source"] == "tgraph-swiglu-rmsnorm"
    assert rows["swiglu"]["vjp"] and rows["rmsnorm"]["vjp"]
    for op in ("swiglu", "rmsnorm"):  # shape rules, kernels and VJPs pass their check
        check = tgraph_cmd("ops", "--check", op, cwd=tmp, env=env)
        assert check.returncode == 0, check.stdout + check.stderr
        assert check.stdout.startswith(f"check_op {op} on numpy: ok")
    # Without the package on the path, the same command knows neither op.
    bare = tgraph_cmd("ops", "--json", cwd=tmp)
    assert {"swiglu", "rmsnorm"}.isdisjoint(r["name"] for r in json.loads(bare.stdout))


@pytest.mark.slow
def test_installed_ops_work_from_python_and_graph_files_without_naming_the_plugin(installed):
    tmp, env = installed
    code = textwrap.dedent("""
        import numpy as np, tgraph as tg
        g = tg.Graph("norm")
        x = g.input("x", (2, 4), "float32")
        g.set_output("y", g.apply("rmsnorm", [x, g.param("gamma", (4,))], {"eps": 0.0}))
        tg.save_graph(g, "norm.json")
        x = np.arange(8, dtype="float32").reshape(2, 4) + 1
        y = tg.run(tg.load_graph("norm.json"), {"x": x}, {"gamma": np.ones(4, "float32")})["y"]
        print(np.abs(y - x / np.sqrt((x * x).mean(-1, keepdims=True))).max())
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp, env=env, check=False,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout) < 1e-6
    info = tgraph_cmd("info", "norm.json", cwd=tmp, env=env)
    assert info.returncode == 0 and "rmsnorm 1" in info.stdout
    missing = tgraph_cmd("info", "norm.json", cwd=tmp)  # package not on the path
    assert missing.returncode == 1
    assert missing.stderr.startswith("error: norm.json: node 'rmsnorm': unknown op 'rmsnorm'")
    assert "--plugin" in missing.stderr and len(missing.stderr.splitlines()) == 1


# ----- --plugin and TGRAPH_PLUGINS ----------------------------------------------------------
def test_plugin_file_path_loads_for_ops_and_graph_files(tmp_path, registry):
    plugin = write(tmp_path / "cube.py", CUBE)
    plugins.load_plugin(str(plugin))
    tg.save_graph(cube_graph(), tmp_path / "cubed.json")
    del _REGISTRY["cube"]
    plugins._loaded.clear()

    runner = CliRunner()
    unknown = runner.invoke(main, ["info", str(tmp_path / "cubed.json")])
    assert unknown.exit_code == 1 and "unknown op 'cube'" in unknown.output
    ok = runner.invoke(main, ["info", str(tmp_path / "cubed.json"), "--plugin", str(plugin)])
    assert ok.exit_code == 0, ok.output
    assert "cube 1" in ok.output
    listed = runner.invoke(main, ["ops", "--json", "--plugin", str(plugin)])
    (row,) = [r for r in json.loads(listed.output) if r["name"] == "cube"]
    assert row["source"] == str(plugin) and row["doc"] == "x³ elementwise." and row["vjp"]
    x = np.array([1.0, -2.0, 0.5], dtype="float32")
    np.testing.assert_array_equal(tg.run(tg.load_graph(tmp_path / "cubed.json"), {"x": x})["y"],
                                  x ** 3)


def test_plugin_module_name_and_environment_variable(tmp_path, registry, monkeypatch):
    write(tmp_path / "my_cube_ops.py", CUBE)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = CliRunner().invoke(main, ["ops", "--plugin", "my_cube_ops"])
    assert out.exit_code == 0 and "cube" in out.output
    del _REGISTRY["cube"]
    plugins._loaded.clear()
    sys.modules.pop("my_cube_ops")
    env = {"TGRAPH_PLUGINS": os.pathsep.join([str(tmp_path / "my_cube_ops.py")])}
    out = CliRunner().invoke(main, ["ops", "--json"], env=env)
    assert "cube" in {r["name"] for r in json.loads(out.output)}


def test_two_plugin_files_of_one_name_both_load(tmp_path, registry):
    for sub, op in (("a", "cube"), ("b", "cube2")):
        (tmp_path / sub).mkdir()
        write(tmp_path / sub / "ops.py", CUBE.replace('"cube"', f'"{op}"'))
        plugins.load_plugin(str(tmp_path / sub / "ops.py"))
    assert get_op("cube").source.endswith(os.path.join("a", "ops.py"))
    assert get_op("cube2").source.endswith(os.path.join("b", "ops.py"))


# ----- duplicates ---------------------------------------------------------------------------
def test_duplicate_op_names_are_refused_unless_override(registry):
    class MyRelu(OpDef):
        name = "relu"

        def infer(self, types):
            return types[0]

        def kernel(self, xp, x):
            return xp.maximum(x, 0.5)

    with pytest.raises(TGraphError, match=r"op 'relu' is already registered .*override=True"):
        register_op(MyRelu)
    assert not isinstance(get_op("relu"), MyRelu)
    register_op(MyRelu, override=True)
    assert isinstance(get_op("relu"), MyRelu)


def test_a_plugin_taking_a_builtin_name_fails_and_changes_nothing(tmp_path, registry):
    plugin = write(tmp_path / "clash.py", CUBE.replace('"cube"', '"cube_first"') +
                   CUBE.replace("class Cube", "class Exp").replace('"cube"', '"exp"'))
    out = CliRunner().invoke(main, ["ops", "--plugin", str(plugin)])
    assert out.exit_code == 1
    assert "op 'exp' is already registered (by tgraph.ops" in out.output
    assert "pass override=True" in out.output
    assert get_op("exp").source.startswith("tgraph.ops")
    with pytest.raises(UnknownOpError):  # rolled back: the plugin's first op is gone too
        get_op("cube_first")


# ----- broken plugins -----------------------------------------------------------------------
@pytest.mark.parametrize("body, message", [
    ("import numpy\n\n\nraise RuntimeError('boom')\n",
     "error: plugin 'broken.py' failed to load at broken.py:4: RuntimeError: boom"),
    ("def f(:\n", "error: plugin 'broken.py' failed to load: SyntaxError: invalid syntax"),
    ("import no_such_module_anywhere\n",
     "error: plugin 'broken.py' failed to load: No module named 'no_such_module_anywhere'"),
])
def test_a_plugin_raising_on_import_is_one_error_line(tmp_path, body, message):
    (tmp_path / "broken.py").write_text(body)
    out = tgraph_cmd("ops", "--plugin", "broken.py", cwd=tmp_path)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.startswith(message)
    assert len(out.stderr.splitlines()) == 1 and "Traceback" not in out.stderr


@pytest.mark.parametrize("spec, message", [
    ("missing.py", "plugin file 'missing.py' does not exist"),
    ("no_such_plugin_mod", "No module named 'no_such_plugin_mod' (give an importable module"),
])
def test_a_plugin_that_cannot_be_found(spec, message, registry):
    out = CliRunner().invoke(main, ["ops", "--plugin", spec])
    assert out.exit_code == 1 and message in out.output


def test_a_broken_plugin_in_the_environment_fails_every_command(tmp_path):
    write(tmp_path / "broken.py", "raise ValueError('bad config')\n")
    env = {**os.environ, "TGRAPH_PLUGINS": str(tmp_path / "broken.py")}
    out = tgraph_cmd("info", "gpt", cwd=tmp_path, env=env)
    assert out.returncode == 1
    assert out.stderr == (f"error: plugin '{tmp_path / 'broken.py'}' failed to load at "
                          "broken.py:1: ValueError: bad config\n")


# ----- graph files ------------------------------------------------------------------------
def test_graph_files_never_load_plugins(tmp_path, registry):
    marker = tmp_path / "imported"
    plugin = write(tmp_path / "cube.py", f"open({str(marker)!r}, 'w').close()\n" + CUBE)
    plugins.load_plugin(str(plugin))
    marker.unlink()
    g = cube_graph()
    g.meta["plugins"] = [str(plugin)]  # a file may say anything; nothing acts on it
    tg.save_graph(g, tmp_path / "cubed.json")
    del _REGISTRY["cube"]
    plugins._loaded.clear()
    with pytest.raises(UnknownOpError, match=r"cubed.json: node 'cube': unknown op 'cube'.*"
                                             r"--plugin MODULE_OR_PATH or TGRAPH_PLUGINS"):
        tg.load_graph(tmp_path / "cubed.json")
    out = tgraph_cmd("run", "cubed.json", "--random", cwd=tmp_path)
    assert out.returncode == 1 and "unknown op 'cube'" in out.stderr
    assert not marker.exists()


# ----- checking a user's op -------------------------------------------------------------------
def test_check_catches_a_wrong_gradient_and_a_wrong_shape_rule(tmp_path, registry):
    examples = "\n    def examples(self, rng):\n        return [([rng.standard_normal(4)], {})]\n"
    wrong_vjp = CUBE.replace("grads[0] * 3 * x * x", "grads[0] * 2 * x * x") + examples
    write(tmp_path / "wrong_vjp.py", wrong_vjp)
    out = CliRunner().invoke(main, ["ops", "--check", "cube", "--plugin",
                                    str(tmp_path / "wrong_vjp.py")])
    assert out.exit_code == 1
    assert "check_op cube on numpy: FAILED" in out.output
    assert "gradient of x0 differs from finite differences" in out.output
    assert "error: op 'cube' failed its check in 1 of 1 case(s)" in out.output

    wrong_shape = CUBE.replace('"cube"', '"cube_sum"').replace(
        "return x * x * x", "return (x * x * x).sum()") + examples
    write(tmp_path / "wrong_shape.py", wrong_shape)
    out = CliRunner().invoke(main, ["ops", "--check", "cube_sum", "--json", "--plugin",
                                    str(tmp_path / "wrong_shape.py")])
    assert out.exit_code == 1
    report = json.loads(out.output[:out.output.rindex("}") + 1])
    assert not report["ok"] and "shape rule says float64[4]" in report["cases"][0]["problems"][0]


def test_an_op_without_vjp_names_itself_when_a_gradient_must_flow(tmp_path, registry):
    from tgraph.autodiff import grad
    from tgraph.errors import NoGradientError

    plugins.load_plugin(str(write(tmp_path / "no_vjp.py", CUBE.split("    def vjp")[0])))
    assert not get_op("cube").has_vjp
    g = tg.Graph("g")
    with g.scope("block"):
        y = g.apply("cube", [g.param("w", (3,))])
    g.set_output("loss", tb.sum(y))
    with pytest.raises(NoGradientError, match=r"op 'cube' has no gradient rule.*scope block"):
        grad(g, "loss", wrt=["block/w"])


@pytest.mark.slow
def test_the_example_script_swaps_the_plugin_ops_into_a_gpt_and_trains_it(tmp_path):
    script = ROOT / "examples" / "custom_op" / "gpt_swiglu_rmsnorm.py"
    out = subprocess.run([sys.executable, str(script), "--steps", "20", "--out", str(tmp_path)],
                         cwd=tmp_path, check=False, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "swiglu True, rmsnorm True, layernorm False" in out.stdout
    svg = (tmp_path / "gpt-swiglu-rmsnorm.svg").read_text()
    assert "SwiGLU" in svg and "RMSNorm" in svg
    first, last = map(float, out.stdout.split("loss ")[1].split(" after")[0].split(" -> "))
    assert last < 0.5 * first  # it learns: the next number of a count is easy
    g = json.loads((tmp_path / "gpt-swiglu-rmsnorm.json").read_text())
    assert {"swiglu", "rmsnorm"} <= {n["op"] for n in g["nodes"]}
    assert not any(p["name"].endswith("beta") for p in g["params"])  # RMSNorm has no bias
