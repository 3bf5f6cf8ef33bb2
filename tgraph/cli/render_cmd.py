"""tgraph render and tgraph diff: architecture diagrams."""

from __future__ import annotations

import click

from tgraph.cli.common import (
    Finite,
    graph_source,
    parse_pairs,
    plugin_option,
    resolve_graph,
    status,
    verbosity_options,
)

rankdir_option = click.option("--rankdir", type=click.Choice(["TB", "LR"]), default="TB",
                              show_default=True, help="Data flows top-to-bottom or left-to-right.")
budget_option = click.option("--time-budget", type=Finite(0.1, 86400.0), default=60.0,
                             show_default=True, metavar="SECONDS",
                             help="Layout time before falling back to a collapsed depth.")


@click.command("render")
@graph_source
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Output .svg, .png, .pdf or .dot (default: <graph name>.svg here, the name "
                   "made a safe base name).")
@click.option("--depth", type=click.IntRange(min=0), default=None,
              help="Collapse scopes deeper than N into one box (0: the one-box overview; "
                   "default: every primitive).")
@click.option("--fold/--no-fold", default=True, show_default=True,
              help="Draw identical repeated blocks once, marked ×N.")
@click.option("--backward", is_flag=True,
              help="Draw the backward pass beside the forward one (needs a loss: --loss).")
@click.option("--color", type=click.Choice(["flops", "params"]), default=None,
              help="Shade each box by its share of FLOPs or parameters.")
@click.option("--expand", multiple=True, type=click.Choice(["positions"]),
              help="Draw a detail scope op by op (default: one box), e.g. the sinusoidal "
                   "positions' sin/cos table (repeatable).")
@rankdir_option
@budget_option
@verbosity_options
def render_cmd(graph, output, depth, fold, backward, color, expand, rankdir, time_budget):
    """Draw a graph or model as an expanded architecture diagram.

    Example: tgraph render gpt --preset tiny --depth 2 -o gpt.svg
    """
    from tgraph.render import render
    from tgraph.sanitize import default_output

    r = render(graph, output or default_output(graph.name, ".svg"), depth=depth, fold=fold, backward=backward,
               rankdir=rankdir, color=color, time_budget=time_budget, expand=expand)
    if r.note:
        status(f"note: {r.note}")
    status(f"wrote {r.path} ({r.items} boxes, {r.edges} edges)")


@click.command("diff")
@click.argument("graph_a", metavar="A")
@click.argument("graph_b", metavar="B")
@click.option("--preset", help="Model preset for both, when A and B are model names.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Model config override for both (repeatable).")
@click.option("--set-a", "sets_a", multiple=True, metavar="KEY=VALUE", help="Override for A only.")
@click.option("--set-b", "sets_b", multiple=True, metavar="KEY=VALUE", help="Override for B only.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default="diff.svg",
              show_default=True, help="Output .svg, .png, .pdf or .dot.")
@click.option("--fold/--no-fold", default=True, show_default=True,
              help="Draw identical repeated blocks once, marked ×N (as render does).")
@rankdir_option
@budget_option
@verbosity_options
@plugin_option
def diff_cmd(graph_a, graph_b, preset, sets, sets_a, sets_b, output, fold, rankdir, time_budget):
    """Draw two graphs as one, marking nodes only in A, only in B, moved or changed.

    Example: tgraph diff gpt gpt --preset tiny --set-a norm=post --set-b norm=pre -o ln.svg
    """
    from tgraph.render import render_diff

    def build(spec, own):
        overrides = [f"{k}={v}" for k, v in {**parse_pairs(sets, "--set"),
                                             **parse_pairs(own, "--set")}.items()]
        return resolve_graph(spec, preset, overrides)

    r = render_diff(build(graph_a, sets_a), build(graph_b, sets_b), output, rankdir, time_budget,
                    fold)
    status(f"wrote {r.path} ({r.items} boxes, {r.edges} edges)")
