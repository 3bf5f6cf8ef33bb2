"""Core commands: ops, info, run."""

from __future__ import annotations

import shutil
import textwrap
from collections import Counter

import click
import numpy as np

from tgraph.cli.common import (
    backend_option,
    dim_option,
    echo_json,
    fail,
    graph_source,
    json_option,
    level_option,
    load_feeds,
    output_option,
    parse_dims,
    plugin_option,
    status,
    weights_option,
)


@click.command("ops")
@click.option("--check", "check_name", metavar="NAME",
              help="Check op NAME instead of listing: shape rule vs kernel output on its "
                   "examples, VJP vs finite differences in float64, on NumPy (and CuPy where "
                   "a GPU works). Exit code 1 if a check fails.")
@json_option
@plugin_option
def ops_cmd(check_name, as_json):
    """List the registered ops, or check one.

    Built-in ops and those of loaded plugins, with their signatures. With --check, verify
    one op's shape rule and gradient on its examples.

    Examples: tgraph ops --json; tgraph ops --check swiglu --plugin my_ops.py
    """
    from tgraph.ops import all_ops

    if check_name:
        return check_one(check_name, as_json)
    rows = [{"name": n, "signature": d.signature or f"{n}(...)", "doc": d.describe(),
             "vjp": d.has_vjp, "source": d.source} for n, d in all_ops().items()]
    if as_json:
        return echo_json(rows)
    width = max(60, shutil.get_terminal_size((100, 24)).columns - 4)
    for r in rows:  # signature, then the whole description wrapped below it
        plugin = "" if r["source"].startswith("tgraph.") else f"  [plugin {r['source']}]"
        click.echo(r["signature"] + plugin)
        for line in textwrap.wrap(r["doc"], width):
            click.echo("    " + line)


def check_one(name: str, as_json: bool) -> None:
    from dataclasses import asdict

    from tgraph.backends import get_backend
    from tgraph.checks import check_op

    backends = ["numpy"] + (["cupy"] if get_backend("auto").name == "cupy" else [])
    report = check_op(name, backends=backends)
    if as_json:
        echo_json({**asdict(report), "ok": report.ok})
    else:
        click.echo(str(report))
    if not report.ok:
        failed = sum(not c.ok for c in report.cases)
        fail(f"op {name!r} failed its check in {failed} of {len(report.cases)} case(s)"
             if report.cases else f"op {name!r} has no examples(rng) to check")


@click.command("info")
@graph_source
@dim_option
@click.option("--depth", default=2, show_default=True, type=click.IntRange(min=0),
              help="Scope levels in the table (0: totals only); deeper scopes add into their "
                   "parent's row.")
@json_option
def info_cmd(graph, dims, depth, as_json):
    """Model summary: params, FLOPs and memory per scope.

    A table of the scopes down to --depth with the shapes leaving each, its parameters, its
    FLOPs and the memory of the activations it produces (for the dims given, else the
    graph's own), then inputs, outputs and an op histogram.

    Example: tgraph info gpt --preset tiny --depth 1 --dim B=8 --dim T=128
    """
    from tgraph.summary import format_table, summarize

    s = summarize(graph, parse_dims(dims, graph), depth)
    inputs = {v.name: str(v.type) for v in graph.inputs}
    outputs = {k: str(v.type) for k, v in graph.outputs.items()}
    ops = dict(Counter(n.op for n in graph.nodes).most_common())
    if as_json:
        return echo_json({**s.to_json(), "nodes": len(graph.nodes), "inputs": inputs,
                          "outputs": outputs, "ops": ops})
    click.echo(format_table(s))
    click.echo(f"inputs:  {', '.join(f'{k} {t}' for k, t in inputs.items())}")
    click.echo(f"outputs: {', '.join(f'{k} {t}' for k, t in outputs.items())}")
    click.echo(f"{len(graph.nodes)} nodes: " + ", ".join(f"{k} {v}" for k, v in ops.items()))


@click.command("run")
@graph_source
@weights_option
@click.option("--feed", "feeds", multiple=True, metavar="NAME=FILE.npy",
              help="Input array from a .npy file (repeatable).")
@click.option("--random", "random_", is_flag=True,
              help="Make valid random feeds (and weights, if none given) from the types.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**63 - 1),
              help="Seed for --random.")
@dim_option
@backend_option
@level_option(0)
@output_option
def run_cmd(graph, weights, feeds, random_, seed, dims, backend, level, output):
    """Execute a graph and print (or save with -o) its outputs.

    Example: tgraph run graph.json --weights w.npz --feed x=x.npy -o out.npz
    """
    from tgraph.errors import TGraphError
    from tgraph.feeds import random_feeds
    from tgraph.io import load_weights, save_weights
    from tgraph.params import init_params
    from tgraph.runtime import executable

    dims = parse_dims(dims, graph)
    given = load_feeds(feeds)
    if random_:
        given = {**random_feeds(graph, dims, seed), **given}
    if weights:
        params = load_weights(weights, graph)
    elif random_ or not graph.params:
        params = init_params(graph, seed)
    else:
        raise TGraphError("the graph has parameters: give --weights W.npz (or --random)")
    from tgraph.passes import optimize

    ex = executable(optimize(graph, level)[0] if level else graph, backend)
    out = ex.run(given, params, dims)
    if output:
        save_weights(out, output)
        status(f"wrote {len(out)} output(s) to {output}")
    for k, a in out.items():
        stats = (f"mean {float(np.mean(a)):.6g} std {float(np.std(a)):.6g}"
                 if a.dtype.kind == "f" and a.size else "")
        click.echo(f"{k}: {a.dtype}{list(a.shape)} {stats}".rstrip())
