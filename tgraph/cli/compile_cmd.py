"""The compile command: run the graph passes and save the faster graph."""

from __future__ import annotations

import click

from tgraph.cli.common import graph_source, output_option, status


@click.command("compile")
@graph_source
@output_option
def compile_cmd(graph, output):
    """Optimise a graph (heads merged, dead code, common subexpressions, constants) and save it.

    Example: tgraph compile gpt --preset tiny -o gpt-fast.json
    """
    from tgraph.io import save_graph
    from tgraph.passes import optimize

    fast, report = optimize(graph)
    click.echo(f"{len(graph.nodes)} → {len(fast.nodes)} nodes "
               f"({', '.join(f'{k}: {v}' for k, v in report.items())})")
    if output:
        save_graph(fast, output)
        status(f"wrote {output}")
