"""What every command shares: the GRAPH-or-MODEL argument, model options, feeds, dims,
plugins, --json, --quiet/--verbose with a progress bar for long work, and turning a
TGraphError into one line on stderr with exit code 1."""

from __future__ import annotations

import functools
import json
import re
import signal
import sys
from pathlib import Path

import click
import numpy as np

from tgraph.errors import TGraphError
from tgraph.progress import _VERBOSITY, NORMAL, QUIET, VERBOSE, verbosity
from tgraph.runtime import BACKENDS
from tgraph.sanitize import clip

MESSAGE_LIMIT = 300  # characters of one error line
DIM_LIMIT = 1 << 48


class Group(click.Group):
    """Loads installed and TGRAPH_PLUGINS plugins before any command, and turns a TGraphError
    (or an OSError on a user's file) into ``error: <one line>`` on stderr and exit code 1."""

    def invoke(self, ctx):
        from tgraph.plugins import load_env, load_installed

        # SIGTERM unwinds like an exception: temporary files are removed and a running
        # `dot` child is killed on the way out (subprocess.run kills it on any exception)
        signal.signal(signal.SIGTERM, _terminated)
        try:
            load_installed()
            load_env()
            return super().invoke(ctx)
        except click.UsageError as e:  # click repeats the bad value: cap it like ours
            e.message = clip_line(e.message, MESSAGE_LIMIT - 60)
            raise
        except TGraphError as e:
            fail(str(e))
        except OSError as e:
            reason = e.strerror or str(e)
            fail(f"{reason}: {clip(e.filename)}" if e.filename else reason)


def _terminated(signum, frame):
    raise SystemExit(128 + signum)


def clip_line(message: str, limit: int) -> str:
    """One line of at most ``limit`` characters."""
    line = " ".join(str(message).split())
    return line if len(line) <= limit else line[:limit - 1] + "…"


def fail(message: str) -> None:
    """``error: <message>`` as one line of at most MESSAGE_LIMIT characters, exit code 1."""
    click.echo("error: " + clip_line(message, MESSAGE_LIMIT - 7), err=True)
    sys.exit(1)


def _load_plugins(ctx, param, value):
    from tgraph.plugins import load_plugin

    for spec in value:
        load_plugin(spec)
    return value


plugin_option = click.option(
    "--plugin", "plugins", multiple=True, metavar="MODULE_OR_PATH", is_eager=True,
    expose_value=False, callback=_load_plugins,
    help="Load custom ops from a module or .py file first (repeatable).")


def graph_source(f):
    """GRAPH argument (a .json file or a model name) with --preset/--set/--loss; the command
    receives ``graph`` as a built or loaded Graph."""

    @click.argument("graph_spec", metavar="GRAPH|MODEL")
    @click.option("--preset", help="Model preset (tiny, gpt2-small, base, ...), for a model name.")
    @click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                  help="Model config override, for a model name (repeatable).")
    @click.option("--loss", is_flag=True, help="Build the model with a targets input and loss.")
    @plugin_option
    @functools.wraps(f)
    def wrapper(graph_spec, preset, sets, loss, **kw):
        return f(graph=resolve_graph(graph_spec, preset, sets, loss), **kw)

    return wrapper


def is_graph_file(spec: str) -> bool:
    """A GRAPH|MODEL argument names a graph file (else a model of the zoo)."""
    return spec.endswith(".json") or Path(spec).is_file()


def resolve_graph(spec: str, preset=None, sets=(), loss=False):
    from tgraph.io import load_graph

    if is_graph_file(spec):
        if preset or sets or loss:
            raise TGraphError("--preset/--set/--loss apply to a model name, not a graph file")
        return load_graph(spec)
    from tgraph.models import MODELS, build_model

    if spec not in MODELS:
        raise TGraphError(f"{clip(spec)} is neither a graph file nor a model "
                          f"(models: {', '.join(MODELS) or 'none'})")
    return build_model(spec, preset=preset, loss=loss, **parse_pairs(sets, "--set"))


def parse_pairs(pairs, flag: str) -> dict[str, str]:
    out = {}
    for p in pairs:
        key, eq, value = p.partition("=")
        if not eq or not key.strip():
            raise click.UsageError(f"{flag} expects KEY=VALUE, got {clip(p)}")
        if key.strip() in out:
            raise click.UsageError(f"{flag} {clip(key.strip())} is given twice")
        out[key.strip()] = value.strip()
    return out


def parse_dims(pairs, graph=None) -> dict[str, int]:
    """``--dim SYM=N`` pairs: N a plain decimal integer from 1 to 2^48, SYM one of the
    graph's symbols when a graph is given."""
    from tgraph.shapes import symbols

    out = {}
    known = None if graph is None else sorted({s for v in graph.values()
                                               for s in symbols(v.shape)})
    for k, v in parse_pairs(pairs, "--dim").items():
        if not re.fullmatch(r"[0-9]{1,15}", v) or not 1 <= int(v) <= DIM_LIMIT:
            raise click.UsageError(f"--dim {clip(k)}= needs an integer from 1 to 2^48, "
                                   f"got {clip(v)}")
        if known is not None and k not in known:
            raise click.UsageError(f"--dim {clip(k)}: the graph has no symbol {clip(k)} "
                                   f"(its symbols: {', '.join(known) or 'none'})")
        out[k] = int(v)
    return out


class Finite(click.FloatRange):
    """A float in a range that is also finite: ``--lr nan`` or ``inf`` is a usage error."""

    name = "finite float"

    def convert(self, value, param, ctx):
        rv = super().convert(value, param, ctx)
        if rv != rv or rv in (float("inf"), float("-inf")):
            self.fail(f"{clip(value)} is not a finite number", param, ctx)
        return rv


dim_option = click.option("--dim", "dims", multiple=True, metavar="SYM=N",
                          help="Bind a symbolic dim, e.g. --dim B=2 --dim T=16 (repeatable).")
output_option = click.option("-o", "--output", type=click.Path(dir_okay=False),
                             help="Output file.")
weights_option = click.option("--weights", type=click.Path(dir_okay=False),
                              help="Weights .npz (parameter name -> array).")
backend_option = click.option(
    "--backend", type=click.Choice(BACKENDS), default="numpy", show_default=True,
    help="Where the graph runs: tgraph's executor on NumPy or CuPy (auto: the GPU when one "
         "works), the whole graph in one ONNX Runtime session (onnxruntime, or ort), or the "
         "whole graph jitted by JAX/XLA (jax).")
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def level_option(default: int):
    """-O0 (the graph as built), -O1 (cleanups, heads merged), -O2 (+ fused kernels)."""
    return click.option("-O", "level", type=click.IntRange(0, 2), default=default,
                        show_default=True, metavar="LEVEL",
                        help="Optimisation level: -O0 the graph as built, -O1 heads merged, "
                             "dead code, CSE, constants folded, -O2 also elementwise chains "
                             "fused into compiled multi-threaded kernels.")


def echo_json(obj) -> None:
    click.echo(json.dumps(obj, indent=1, ensure_ascii=False, default=str))


def load_feeds(pairs) -> dict[str, np.ndarray]:
    from tgraph.io import load_array

    return {name: load_array(path, f"feed {clip(name)}")
            for name, path in parse_pairs(pairs, "--feed").items()}



def verbosity_options(f):
    """``-q/--quiet`` and ``-v/--verbose`` for commands doing long work; see ``verbosity()``."""

    def store(ctx, param, value):
        if value:
            level = QUIET if param.name == "quiet" else VERBOSE
            if ctx.meta.setdefault(_VERBOSITY, level) != level:
                raise click.UsageError("--quiet and --verbose exclude each other")
        return value

    f = click.option("-v", "--verbose", is_flag=True, expose_value=False, callback=store,
                     help="More detail; progress lines even when output is not a terminal.")(f)
    return click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=store,
                        help="No progress or status lines: results and errors only.")(f)


def status(message: str, level: int = NORMAL) -> None:
    """A status line on stderr, shown at ``level`` and more verbose (hidden by --quiet)."""
    if verbosity() >= level:
        click.echo(message, err=True)
