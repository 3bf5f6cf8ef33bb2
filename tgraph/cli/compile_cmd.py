"""The compile command: run the graph passes and save the faster graph."""

from __future__ import annotations

import click

from tgraph.cli.common import graph_source, level_option, output_option, status


@click.command("compile")
@graph_source
@output_option
@level_option(1)
def compile_cmd(graph, output, level):
    """Optimise a graph (heads merged, dead code, common subexpressions, constants; at -O2
    elementwise chains fused too) and save it.

    Example: tgraph compile gpt --preset tiny -O2 -o gpt-fast.json
    """
    from tgraph.io import save_graph
    from tgraph.passes import optimize

    fast, report = optimize(graph, level)
    click.echo(f"{len(graph.nodes)} → {len(fast.nodes)} nodes "
               f"({', '.join(f'{k}: {v}' for k, v in report.items())})")
    if output:
        save_graph(fast, output)
        status(f"wrote {output}")
