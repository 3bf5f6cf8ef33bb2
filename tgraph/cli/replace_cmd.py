"""The replace-op command: swap every node of one op for another in a graph (file or model)."""

from __future__ import annotations

import json

import click

from tgraph.cli.common import graph_source, parse_pairs, status


@click.command("replace-op")
@graph_source
@click.argument("old")
@click.argument("new")
@click.option("--attr", "attrs", multiple=True, metavar="KEY=VALUE",
              help="Attr of the new op (repeatable); values read as JSON (1.5, true), else text.")
@click.option("--scope", help="Only nodes under this scope, e.g. decoder/layer_0.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True,
              help="The rewritten graph (.json).")
def replace_op_cmd(graph, old, new, attrs, scope, output):
    """Replace every OLD node by op NEW, keeping scopes; NEW gets the parameters it
    declares. The same numbers as building a model with the option (norm_op=, activation=).

    Example: tgraph replace-op gpt.json layernorm my_rmsnorm --plugin my_ops.py -o gpt2.json
    """
    from tgraph.errors import TGraphError
    from tgraph.io import save_graph
    from tgraph.passes import replace_op

    count = replace_op(graph, old, new, scope, **{k: _literal(v) for k, v in
                                                  parse_pairs(attrs, "--attr").items()})
    if not count:
        raise TGraphError(f"graph {graph.name!r} has no {old} node"
                          + (f" under scope {scope!r}" if scope else ""))
    save_graph(graph.validate(), output)
    status(f"wrote {output}: {count} {old} node(s) replaced by {new}, "
           f"{graph.param_count():,} parameters")


def _literal(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text
