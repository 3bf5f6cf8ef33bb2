"""Model zoo commands: ``models`` (what can be built) and ``build`` (a model to a graph file)."""

from __future__ import annotations

import click

from tgraph.cli.common import (
    echo_json,
    json_option,
    output_option,
    parse_pairs,
    plugin_option,
    status,
)


@click.command("models")
@json_option
@plugin_option
def models_cmd(as_json):
    """List models with their inputs/outputs, presets and config keys.

    Example: tgraph models --json
    """
    from tgraph.models import MODELS

    rows = [{"name": s.name, "doc": s.doc, "io": s.io, "presets": {k: dict(v) for k, v in
                                                                     s.presets.items()},
             "options": s.options()} for s in MODELS.values()]
    if as_json:
        return echo_json(rows)
    for r in rows:
        click.echo(f"{r['name']}: {r['doc']}")
        click.echo(f"  io: {r['io']}")
        click.echo(f"  presets: {', '.join(r['presets'])}")
        for o in r["options"]:
            default = str(o["default"]).lower() if o["type"] == "bool" else o["default"]
            kind = "|".join(o["choices"]) or o["type"]
            click.echo(f"    {o['key'] + '=' + str(default):<26} {kind:<30} {o['help']}")
        click.echo()


@click.command("build")
@click.argument("model")
@click.option("--preset", help="Preset (tiny, gpt2-small, base, ...; see `tgraph models`).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Config override, e.g. --set n_layers=2 --set heads=batched (repeatable).")
@click.option("--loss", is_flag=True, help="Add a targets input and a scalar loss output.")
@output_option
@click.option("--weights", type=click.Path(dir_okay=False),
              help="Also write freshly initialised weights to this .npz.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**63 - 1),
              help="Seed for --weights.")
@plugin_option
def build_cmd(model, preset, sets, loss, output, weights, seed):
    """Build a model from the zoo and save its graph (and optionally initial weights).

    Example: tgraph build gpt --preset tiny --set heads=batched -o gpt.json --weights w.npz
    """
    from tgraph.io import all_or_nothing, save_graph, save_weights
    from tgraph.models import build_model
    from tgraph.params import init_params

    if not output:
        raise click.UsageError("give -o GRAPH.json")
    graph = build_model(model, preset=preset, loss=loss, **parse_pairs(sets, "--set"))
    with all_or_nothing():  # both files or neither
        save_graph(graph, output)
        if weights:
            save_weights(init_params(graph, seed), weights)
    status(f"wrote {output}: {len(graph.nodes)} nodes, {graph.param_count():,} parameters")
    if weights:
        status(f"wrote {weights}: {len(graph.params)} arrays (seed {seed})")
