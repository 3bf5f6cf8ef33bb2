"""What every command shares: the GRAPH-or-MODEL argument, model options, feeds, dims,
plugins, --json, --quiet/--verbose with a progress bar for long work, and turning a
TGraphError into one line on stderr with exit code 1."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import click
import numpy as np

from tgraph.errors import TGraphError
from tgraph.progress import _VERBOSITY, NORMAL, QUIET, VERBOSE, verbosity


class Group(click.Group):
    """Loads installed and TGRAPH_PLUGINS plugins before any command, and turns a TGraphError
    (or an OSError on a user's file) into ``error: <one line>`` on stderr and exit code 1."""

    def invoke(self, ctx):
        from tgraph.plugins import load_env, load_installed

        try:
            load_installed()
            load_env()
            return super().invoke(ctx)
        except TGraphError as e:
            fail(str(e))
        except OSError as e:
            reason = e.strerror or str(e)
            fail(f"{reason}: {e.filename}" if e.filename else reason)


def fail(message: str) -> None:
    click.echo("error: " + " ".join(message.split("\n")), err=True)
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
        raise TGraphError(f"{spec!r} is neither a graph file nor a model "
                          f"(models: {', '.join(MODELS) or 'none'})")
    return build_model(spec, preset=preset, loss=loss, **parse_pairs(sets, "--set"))


def parse_pairs(pairs, flag: str) -> dict[str, str]:
    out = {}
    for p in pairs:
        key, eq, value = p.partition("=")
        if not eq or not key:
            raise click.UsageError(f"{flag} expects KEY=VALUE, got {p!r}")
        out[key.strip()] = value.strip()
    return out


def parse_dims(pairs) -> dict[str, int]:
    out = {}
    for k, v in parse_pairs(pairs, "--dim").items():
        if not v.isdigit() or int(v) < 1:
            raise click.UsageError(f"--dim {k}= needs a positive integer, got {v!r}")
        out[k] = int(v)
    return out


dim_option = click.option("--dim", "dims", multiple=True, metavar="SYM=N",
                          help="Bind a symbolic dim, e.g. --dim B=2 --dim T=16 (repeatable).")
output_option = click.option("-o", "--output", type=click.Path(dir_okay=False),
                             help="Output file.")
weights_option = click.option("--weights", type=click.Path(dir_okay=False),
                              help="Weights .npz (parameter name -> array).")
backend_option = click.option("--backend", type=click.Choice(["numpy", "cupy", "auto"]),
                              default="numpy", show_default=True, help="Where kernels run.")
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def echo_json(obj) -> None:
    click.echo(json.dumps(obj, indent=1, ensure_ascii=False, default=str))


def load_feeds(pairs) -> dict[str, np.ndarray]:
    feeds = {}
    for name, path in parse_pairs(pairs, "--feed").items():
        try:
            feeds[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise TGraphError(f"cannot read feed {name!r} from {path!r}: {e}") from None
    return feeds




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
