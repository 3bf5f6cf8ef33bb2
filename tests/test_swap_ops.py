"""A plugin written from the guide's text alone (docs/plugins.md) goes into gpt, bert and
the encoder–decoder by name: rendered (a real dot run, the SVG parsed), differentiated
(checked by finite differences in float64), trained from the CLI with falling loss; and
``replace_op`` on a saved graph gives the same numbers as building with the option."""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import tgraph as tg
from tgraph import plugins
from tgraph.autodiff import grad
from tgraph.cli import main
from tgraph.errors import TGraphError
from tgraph.feeds import random_feeds
from tgraph.io import graph_to_json
from tgraph.models import build_model
from tgraph.ops import OpDef, Param, register_op
from tgraph.ops.registry import _REGISTRY
from tgraph.passes import replace_op
from tgraph.render import render

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "examples" / "data" / "corpus.txt"
SMALL = {"n_layers": 1, "d_model": 16, "n_heads": 2, "d_ff": 32, "vocab": 48, "max_len": 16}
MODELS = ("gpt", "bert", "transformer")
DIMS = {"B": 2, "T": 5, "S": 4}


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    """my_ops.py exactly as the guide shows it, loaded as a file plugin."""
    guide = (ROOT / "docs" / "plugins.md").read_text()
    block = re.search(r"```python\n(# file: my_ops\.py\n.*?)```", guide, re.S).group(1)
    path = tmp_path_factory.mktemp("plugin") / "my_ops.py"
    path.write_text(block)
    ops, loaded = dict(_REGISTRY), set(plugins._loaded)
    plugins.load_plugin(str(path))
    yield path
    _REGISTRY.clear()
    _REGISTRY.update(ops)
    plugins._loaded.clear()
    plugins._loaded.update(loaded)


def swapped(model, **kw):
    return build_model(model, loss=True, norm_op="my_rmsnorm", activation="swish",
                       **{**SMALL, **kw})


@pytest.mark.parametrize("model", MODELS)
def test_the_ops_go_in_by_name_with_the_parameters_they_declare(plugin, model):
    g = swapped(model)
    ops = {n.op for n in g.nodes}
    assert {"my_rmsnorm", "swish"} <= ops and not {"layernorm", "gelu", "relu"} & ops
    norms = [n for n in g.nodes if n.op == "my_rmsnorm"]
    for n in norms:  # x, then the gamma it declared, named in the norm's scope, init ones
        gamma = n.inputs[1]
        assert gamma.kind == "param" and gamma.name == f"{n.scope}/gamma"
        assert gamma.shape == (16,) and gamma.init == {"dist": "ones"}
        assert n.attrs == {"eps": 1e-5}  # the config's eps reaches an op that takes one
    assert not any(p.name.endswith("/beta") for p in g.params)
    assert g.meta["config"]["norm_op"] == "my_rmsnorm"


@pytest.mark.parametrize("model", MODELS)
def test_rendered_with_the_plugin_labels(plugin, model, tmp_path):
    drawn = render(swapped(model), tmp_path / "g.svg")
    texts = {t.text for t in ET.parse(drawn.path).iter("{http://www.w3.org/2000/svg}text")}
    assert {"RMSNorm", "Swish"} <= texts and "LayerNorm" not in texts


@pytest.mark.parametrize("model", MODELS)
def test_gradients_match_finite_differences(plugin, model):
    """Directional derivatives of the float64 loss, along a random direction over every
    parameter and along one over the RMSNorm gains only, against central differences.
    Step h = 1e-5: truncation h²/6·|φ'''| and rounding 2^-52·|φ|/h are both below 1e-9
    for these O(1) losses, so a relative 1e-6 leaves a wide margin and still catches any
    wrong VJP term."""
    g = swapped(model, dtype="float64")
    params = tg.init_params(g, seed=1)
    rng = np.random.default_rng(2)
    params = {k: a + 0.1 * rng.standard_normal(a.shape) for k, a in params.items()}  # gamma ≠ 1
    feeds = random_feeds(g, DIMS, seed=3)
    grads = tg.run(grad(g, "loss"), feeds, params)
    loss = tg.Executable(g)
    for only_gammas in (False, True):
        v = {k: rng.standard_normal(a.shape) * (not only_gammas or k.endswith("/gamma"))
             for k, a in params.items()}
        exact = sum(float(np.sum(grads[f"grad/{k}"] * v[k])) for k in params)
        h = 1e-5
        phi = [float(loss.run(feeds, {k: a + s * h * v[k] for k, a in params.items()})["loss"])
               for s in (1, -1)]
        numeric = (phi[0] - phi[1]) / (2 * h)
        assert abs(exact) > 1e-3  # the check has something to check
        assert abs(numeric - exact) <= 1e-6 * abs(exact), (only_gammas, numeric, exact)


@pytest.mark.parametrize("model", MODELS)
def test_replace_op_on_a_saved_graph_equals_building_with_the_option(plugin, model, tmp_path):
    tg.save_graph(build_model(model, loss=True, **SMALL), tmp_path / "g.json")
    g = tg.load_graph(tmp_path / "g.json")
    old_act = "relu" if model == "transformer" else "gelu"
    n_norms = sum(n.op == "layernorm" for n in g.nodes)
    assert replace_op(g, "layernorm", "my_rmsnorm") == n_norms > 0
    assert replace_op(g, old_act, "swish") > 0
    built = swapped(model)
    assert [(p.name, p.shape, p.init) for p in g.params] == \
           [(p.name, p.shape, p.init) for p in built.params]
    assert [(n.name, n.op, n.scope, n.attrs) for n in g.nodes] == \
           [(n.name, n.op, n.scope, n.attrs) for n in built.nodes]
    a, b = tg.init_params(g, seed=4), tg.init_params(built, seed=4)
    assert all(np.array_equal(a[k], b[k]) for k in b)  # same order: the same draws
    feeds = random_feeds(built, DIMS, seed=5)
    out_a, out_b = tg.run(g, feeds, a), tg.run(built, feeds, b)
    assert all(np.array_equal(out_a[k], out_b[k]) for k in out_b)
    assert g.meta["config"]["norm_op"] == "my_rmsnorm"
    assert g.meta["config"]["activation"] == "swish"


def train(*args, cwd, steps=25):
    argv = [*args, "--steps", steps, "--batch", 16, "--warmup", 5, "--lr", 1e-2]
    out = subprocess.run([sys.executable, "-m", "tgraph", "train", *map(str, argv)],
                         cwd=cwd, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    first, last = map(float, re.search(r"loss ([\d.]+) -> ([\d.]+)", out.stdout).groups())
    return first, last, out.stdout


TEXT = ["--task", "text", "--data", CORPUS, "--seq-len", 16]


@pytest.mark.slow
@pytest.mark.parametrize("model, task, steps, drop", [
    ("gpt", TEXT, 25, 0.85), ("bert", TEXT, 25, 0.85),
    # reverse 4 digits: from ln 11 to well below ln 10 (uniform digits) only by learning it
    ("transformer", ["--task", "reverse", "--seq-len", 4], 100, 0.5)])
def test_trained_from_the_cli_with_falling_loss(plugin, model, task, steps, drop, tmp_path):
    sets = [a for k, v in {**SMALL, "d_model": 32, "norm_op": "my_rmsnorm",
                           "activation": "swish"}.items()
            if k not in ("vocab", "max_len") for a in ("--set", f"{k}={v}")]
    first, last, _ = train(model, *task, *sets, "--plugin", plugin, "-o", tmp_path / "w.npz",
                           cwd=tmp_path, steps=steps)
    assert last < drop * first
    trained = tg.load_graph(tmp_path / "w.json")  # the forward graph beside the weights
    assert {"my_rmsnorm", "swish"} <= {n.op for n in trained.nodes}
    assert "loss" not in trained.outputs and "targets" not in {v.name for v in trained.inputs}
    assert tg.load_weights(tmp_path / "w.npz", trained)


@pytest.mark.slow
def test_a_graph_file_trains_and_generates(plugin, tmp_path):
    g = build_model("gpt", loss=True, **{**SMALL, "vocab": 256})
    replace_op(g, "layernorm", "my_rmsnorm")
    tg.save_graph(g, tmp_path / "g.json")
    first, last, _ = train(tmp_path / "g.json", "--data", CORPUS, "--seq-len", 16, "--plugin",
                           plugin, "-o", tmp_path / "w.npz", cwd=tmp_path)
    assert last < 0.85 * first
    out = subprocess.run([sys.executable, "-m", "tgraph", "generate", tmp_path / "w.json",
                          "--weights", tmp_path / "w.npz", "--prompt", "The ", "--length", "30",
                          "--plugin", plugin], capture_output=True, text=True, check=False,
                         timeout=300)
    assert out.returncode == 0 and out.stdout.startswith("The "), out.stderr
    corpus_chars = set(CORPUS.read_text())
    assert set(out.stdout.rstrip("\n")) <= corpus_chars  # only ids the text's codec maps


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_train_says_what_a_graph_lacks(plugin, tmp_path):
    tg.save_graph(build_model("vit", loss=True), tmp_path / "vit.json")
    r = invoke("train", tmp_path / "vit.json", "--data", CORPUS, "-o", tmp_path / "w.npz")
    assert r.exit_code == 1 and "no data for input(s) images float32[B×3×16×16]" in r.output
    tg.save_graph(build_model("gpt", **SMALL), tmp_path / "noloss.json")
    r = invoke("train", tmp_path / "noloss.json", "--data", CORPUS, "-o", tmp_path / "w.npz")
    assert r.exit_code == 1 and "scalar float output 'loss'" in r.output
    tg.save_graph(build_model("gpt", loss=True, **{**SMALL, "vocab": 16}), tmp_path / "v.json")
    r = invoke("train", tmp_path / "v.json", "--data", CORPUS, "-o", tmp_path / "w.npz")
    assert r.exit_code == 1 and "needs 46 token ids" in r.output and "graph has 16" in r.output
    assert not (tmp_path / "w.npz").exists()


def test_a_role_takes_only_an_op_that_fits(plugin):
    with pytest.raises(TGraphError, match="no op named 'swishh' is registered.*--plugin"):
        build_model("gpt", activation="swishh")
    with pytest.raises(TGraphError, match="'norm_op': op 'sum' is not a normalisation op"):
        build_model("gpt", norm_op="sum")
    r = invoke("build", "gpt", "--set", "activation=matmul", "-o", "never.json")
    assert r.exit_code == 1 and r.output.startswith("error: config key 'activation'")


def test_an_activation_may_declare_parameters_too(plugin):
    """A PReLU's slope per channel is created in the feed-forward scope like any weight."""

    class PReLU(OpDef):
        name = "test_prelu"

        def infer(self, types):
            return types[0]

        def params(self, x):
            return [Param("slope", x.shape[-1:], {"dist": "uniform", "limit": 0.25})]

        def kernel(self, xp, x, a):
            return xp.where(x > 0, x, a * x)

    register_op(PReLU)
    try:
        g = build_model("gpt", activation="test_prelu", **SMALL)
        slope = g.value("decoder/layer_0/ffn/slope")
        assert slope.kind == "param" and slope.shape == (32,)
        names = [p.name for p in g.params]
        assert names.index("decoder/layer_0/ffn/b_1") + 1 == names.index(slope.name)
        h = build_model("gpt", **SMALL)
        replace_op(h, "gelu", "test_prelu")
        assert [p.name for p in h.params] == names
    finally:
        del _REGISTRY["test_prelu"]


def test_replace_op_under_a_scope_and_its_errors(plugin, tmp_path):
    g = build_model("gpt", loss=True, **{**SMALL, "n_layers": 2})
    assert replace_op(g, "layernorm", "my_rmsnorm", scope="decoder/layer_1") == 2
    assert [n.scope for n in g.nodes if n.op == "my_rmsnorm"] == \
           ["decoder/layer_1/ln_1", "decoder/layer_1/ln_2"]
    assert g.meta["config"]["norm_op"] == "layernorm"  # layernorms are left elsewhere
    assert g.value("decoder/layer_0/ln_1/beta").kind == "param"
    assert "decoder/layer_1/ln_1/beta" not in {p.name for p in g.params}
    with pytest.raises(TGraphError, match=r"replace_op: sum would give float32\[scalar\] where "
                                          r"gelu node 'decoder/layer_0/ffn/gelu' \(scope "
                                          r"decoder/layer_0/ffn\) gives float32\[B×T×32\]"):
        replace_op(g, "gelu", "sum")
    before = graph_to_json(g)
    with pytest.raises(TGraphError, match="replace_op: sum would give"):
        replace_op(g, "layernorm", "sum")  # checked before touching: the gains stay
    assert graph_to_json(g) == before
    tg.save_graph(g, tmp_path / "g.json")
    r = invoke("replace-op", tmp_path / "g.json", "relu", "swish", "--plugin", plugin,
               "-o", tmp_path / "h.json")
    assert r.exit_code == 1 and "has no relu node" in r.output
    r = invoke("replace-op", tmp_path / "g.json", "gelu", "swish", "--attr", "beta=1.5",
               "--plugin", plugin, "-o", tmp_path / "h.json")
    assert r.exit_code == 0, r.output
    h = tg.load_graph(tmp_path / "h.json")
    assert [n.attrs for n in h.nodes if n.op == "swish"] == [{"beta": 1.5}] * 2
