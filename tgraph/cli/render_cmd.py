"""tgraph render and tgraph diff: architecture diagrams."""

from __future__ import annotations

import click

from tgraph.cli.common import (
    Finite,
    dim_option,
    graph_source,
    load_feeds,
    parse_dims,
    parse_pairs,
    plugin_option,
    resolve_graph,
    status,
    verbosity_options,
    weights_option,
)

rankdir_option = click.option("--rankdir", type=click.Choice(["TB", "LR"]), default="TB",
                              show_default=True, help="Data flows top-to-bottom or left-to-right.")
budget_option = click.option("--time-budget", type=Finite(0.1, 86400.0), default=60.0,
                             show_default=True, metavar="SECONDS",
                             help="Layout time before falling back to a collapsed depth.")


def diagram_options(f):
    """What ``render`` and ``view`` share: drawing options and the values-on-graph run."""
    for option in reversed([
        graph_source,
        click.option("--depth", type=click.IntRange(min=0), default=None,
                     help="Collapse scopes deeper than N into one box (0: the one-box "
                          "overview; default: every primitive; HTML: opened on load, 2)."),
        click.option("--fold/--no-fold", default=True, show_default=True,
                     help="Draw identical repeated blocks once, marked ×N."),
        click.option("--backward", is_flag=True,
                     help="Draw the backward pass (needs a loss: --loss); HTML: a view of it."),
        click.option("-O", "opt_level", type=click.IntRange(0, 2), default=0, metavar="LEVEL",
                     help="Draw the graph compiled at this level (-O1 heads merged and cleaned "
                          "up, -O2 also fused kernels, each a block of its ops; with "
                          "--backward, the forward+backward graph as training runs it); "
                          "HTML: adds a compiled view beside the graph as built."),
        click.option("--color", type=click.Choice(["flops", "params"]), default=None,
                     help="Shade each box by its share of FLOPs or parameters."),
        click.option("--expand", multiple=True, type=click.Choice(["positions"]),
                     help="Draw a detail scope op by op (default: one box), e.g. the "
                          "sinusoidal positions' sin/cos table (repeatable; HTML: every "
                          "such box opens on a click)."),
        weights_option,
        click.option("--text", default=None,
                     help="Run the graph on this text (tokens) and show its values."),
        click.option("--feed", "feeds", multiple=True, metavar="NAME=FILE.npy",
                     help="Run the graph on this input (repeatable) and show its values."),
        click.option("--random", "random_", is_flag=True,
                     help="Run the graph on random input (and weights, if none given)."),
        click.option("--seed", default=0, show_default=True, help="Seed for --random."),
        dim_option,
        click.option("--attention", is_flag=True,
                     help="SVG/PNG/PDF: draw each head's attention pattern in its softmax box "
                          "(needs --text, --feed or --random; draws every head: --no-fold)."),
        rankdir_option,
        budget_option,
        verbosity_options,
    ]):
        f = option(f)
    return f


def draw(graph, output, depth, fold, backward, opt_level, color, expand, weights, text, feeds,
         random_, seed, dims, attention, rankdir, time_budget):
    """Run the graph when values were asked for, then write the diagram or the viewer."""
    from tgraph.errors import TGraphError
    from tgraph.render import render
    from tgraph.render.html import write_html

    values = None
    if text is not None or feeds or random_:
        values = _values(graph, weights, text, feeds, random_, seed, dims)
    elif weights:
        raise TGraphError("--weights shows values only with an input: add --text, --feed or "
                          "--random")
    if output.lower().endswith(".html"):
        r = write_html(graph, output, backward=backward, level=opt_level, fold=fold,
                       depth=2 if depth is None else depth, rankdir=rankdir, values=values,
                       time_budget=time_budget, color=color)
    else:
        if attention and values is None:
            raise TGraphError("--attention draws the patterns of a run: add --text, --feed or "
                              "--random")
        if opt_level:
            from tgraph.passes import optimize, training_graph

            # with --backward, the forward+backward graph that runs at that level (attention
            # keeping its weights, GELU's Φ read back, fused across both), not the gradient
            # of the compiled forward
            graph = (training_graph(graph, "loss", opt_level)
                     if backward and "loss" in graph.outputs else optimize(graph, opt_level)[0])
        r = render(graph, output, depth=depth, fold=fold and not attention, backward=backward,
                   rankdir=rankdir, color=color, time_budget=time_budget, expand=expand,
                   attention=values.patterns if attention else None)
    if r.note:
        status(f"note: {r.note}")
    status(f"wrote {r.path} ({r.items} boxes, {r.edges} edges)")
    return r


def _values(graph, weights, text, feeds, random_, seed, dims):
    from tgraph.io import load_weights
    from tgraph.params import init_params
    from tgraph.render.values import collect_values, value_feeds

    given, labels = value_feeds(graph, text, load_feeds(feeds), random_, seed, parse_dims(dims))
    params = load_weights(weights, graph) if weights else init_params(graph, seed)
    values = collect_values(graph, given, params, labels)
    values.source = (f"text {text!r}" if text is not None else
                     ", ".join(f"{k}={v}" for k, v in parse_pairs(feeds, "--feed").items())
                     or f"random input (seed {seed})")
    values.source += f"; weights {weights}" if weights else f"; random weights (seed {seed})"
    return values


@click.command("render")
@diagram_options
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Output .svg, .png, .pdf, .dot or .html (default: <graph name>.svg here, "
                   "the name made a safe base name).")
def render_cmd(graph, output, **kw):
    """Draw a graph or model as an expanded architecture diagram, or as an interactive HTML
    page (-o x.html) with values from a run (--text, --feed, --random).

    Example: tgraph render gpt --preset tiny --depth 2 -o gpt.svg
    """
    from tgraph.sanitize import default_output

    draw(graph, str(output or default_output(graph.name, ".svg")), **kw)


@click.command("view")
@diagram_options
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Output .html (default: <graph name>.html here, a safe base name).")
@click.option("--open/--no-open", "open_", default=True, show_default=True,
              help="Open the page in a web browser, when there is one.")
def view_cmd(graph, output, open_, **kw):
    """Write the interactive HTML viewer and open it in a browser.

    Example: tgraph view gpt --preset tiny --random --backward
    """
    import webbrowser
    from pathlib import Path

    from tgraph.errors import TGraphError
    from tgraph.sanitize import default_output

    output = str(output or default_output(graph.name, ".html"))
    if not output.lower().endswith(".html"):
        raise TGraphError(f"tgraph view writes an HTML page; {output!r} does not end in .html")
    r = draw(graph, output, **kw)
    if open_ and not webbrowser.open(Path(r.path).resolve().as_uri()):
        status(f"no web browser found here; open {r.path} in one")


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
