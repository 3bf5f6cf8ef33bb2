"""ONNX commands: ``export`` (a graph to .onnx) and ``import`` (an .onnx to a graph file)."""

from __future__ import annotations

import click

from tgraph.cli.common import (
    dim_option,
    graph_source,
    parse_dims,
    plugin_option,
    status,
    weights_option,
)


@click.command("export")
@graph_source
@weights_option
@click.option("--seed", type=int, default=None,
              help="No weights file: initialise the parameters with this seed instead.")
@click.option("--opset", type=click.IntRange(17, 21), default=17, show_default=True,
              help="ONNX opset; 20 and up write Gelu as one op, 17 as its decomposition.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True,
              help="The .onnx file (tensors past 2 GiB go to <output>.data beside it).")
def export_cmd(graph, weights, seed, opset, output):
    """Write a graph (forward, or forward+backward from tgraph grad) as an ONNX model.

    Symbolic dims stay dynamic (dim_param), parameters become initializers, node names
    carry the scopes. The file is checked with onnx.checker (full check) before it is
    written.

    Examples: tgraph export gpt --preset tiny --seed 0 -o gpt.onnx;
    tgraph export fwdbwd.json --weights w.npz -o fwdbwd.onnx
    """
    from tgraph.errors import TGraphError
    from tgraph.interop import export_onnx
    from tgraph.io import load_weights
    from tgraph.params import init_params

    if weights and seed is not None:
        raise click.UsageError("give --weights or --seed, not both")
    if weights:
        params = load_weights(weights, graph)
    elif seed is not None or not graph.params:
        params = init_params(graph, seed or 0)
    else:
        raise TGraphError("the graph has parameters: give --weights W.npz (or --seed N)")
    model = export_onnx(graph, output, params, opset=opset)
    status(f"wrote {output}: {len(model.graph.node)} ONNX nodes, opset {opset}")


@click.command("import")
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True,
              help="The tgraph graph file (.json).")
@click.option("--weights", type=click.Path(dir_okay=False),
              help="Write the model's float initializers (the parameters) to this .npz.")
@dim_option
@plugin_option
def import_cmd(model, output, weights, dims):
    """Read an ONNX model (a torch.onnx.export, say) into a tgraph graph on tgraph's
    primitives: render it, run it, differentiate it, train it.

    --dim T=16 fixes a dynamic input axis (by its dim_param) where the exporter baked a
    size into the shape arithmetic.

    Example: tgraph import encoder.onnx -o encoder.json --weights encoder.npz
    """
    from tgraph.interop import import_onnx
    from tgraph.io import save_graph, save_weights

    graph, params = import_onnx(model, parse_dims(dims))
    if params and not weights:
        status(f"note: the model's {len(params)} parameters are not written; "
               "pass --weights W.npz to keep them")
    if weights:
        save_weights(params, weights)
    save_graph(graph, output)
    status(f"wrote {output}" + (f" and {weights}" if weights else "")
           + f": {len(graph.nodes)} nodes, {graph.param_count():,} parameters")
