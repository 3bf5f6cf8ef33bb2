"""tgraph bench: how fast a graph runs at an optimisation level, on a backend."""

from __future__ import annotations

import click

from tgraph.cli.common import (
    backend_option,
    dim_option,
    echo_json,
    is_graph_file,
    json_option,
    level_option,
    parse_dims,
    plugin_option,
    resolve_graph,
    status,
    verbosity_options,
)


@click.command("bench")
@click.argument("graph_spec", metavar="GRAPH|MODEL")
@click.option("--preset", help="Model preset (tiny, gpt2-small, ...), for a model name.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Model config override, for a model name (repeatable).")
@dim_option
@backend_option
@level_option(2)
@click.option("--repeats", default=5, show_default=True, type=click.IntRange(min=1),
              help="Timed runs after the warm-up; the median is reported.")
@json_option
@verbosity_options
@plugin_option
def bench_cmd(graph_spec, preset, sets, dims, backend, level, repeats, as_json):
    """Median forward and forward+backward times, compile time and peak memory.

    A model name is built with its loss, so the step is timed too; a graph file gets a
    step when it has a scalar output named loss. Feeds and weights are random. --json
    prints one object: forward_ms, step_ms, compile_s, peak_mb, planned_mb, backend, level,
    nodes, dims.

    Example: tgraph bench gpt --preset tiny --dim B=8 --dim T=64 -O2 --json
    """
    from tgraph.bench import bench

    graph = resolve_graph(graph_spec, preset, sets, loss=not is_graph_file(graph_spec))
    r = bench(graph, parse_dims(dims, graph), backend, level, repeats,
              progress=lambda label: status(f"bench: {label} ..."))
    if as_json:
        return echo_json(r.to_json())
    dims_text = ", ".join(f"{k}={v}" for k, v in sorted(r.dims.items()))
    click.echo(f"{graph.name} on {r.backend} at -O{r.level} ({dims_text}), median of {repeats}")
    click.echo(f"forward       {r.forward_ms:10.2f} ms")
    if r.step_ms is not None:
        click.echo(f"fwd+bwd step  {r.step_ms:10.2f} ms")
    click.echo(f"compile       {r.compile_s:10.2f} s   (passes, set-up, kernels)")
    if r.peak_mb is None:
        click.echo(f"peak memory   not seen: {r.backend} holds the arrays ({r.nodes} nodes)")
    else:
        click.echo(f"peak memory   {r.peak_mb:10.1f} MiB measured, {r.planned_mb:.1f} MiB "
                   f"planned ({r.nodes} nodes)")
