"""Training any graph: whether a task can feed it, what it allows, and the forward graph
to keep beside the weights.

A graph trains when it has a scalar float ``loss`` output and every input is one the task
feeds (text: tokens, targets, attention_mask; reverse/copy/sort: src_tokens, tgt_tokens,
targets). Its token ids and context come from what the graph records (a zoo model's
``int_ranges`` and ``config``) or from its types (fixed dims, the logits' last axis).
"""

from __future__ import annotations

from tgraph.errors import TGraphError
from tgraph.ir import Graph
from tgraph.shapes import FLOAT_DTYPES


def check_loss(graph: Graph, loss: str = "loss") -> None:
    y = graph.outputs.get(loss)
    if y is None or y.shape != () or y.dtype not in FLOAT_DTYPES:
        got = "has none" if y is None else f"its {loss!r} is {y.type}"
        raise TGraphError(f"graph {graph.name!r} cannot be trained: it needs a scalar float "
                          f"output {loss!r} ({got}); build a model with --loss, or "
                          f"g.set_output({loss!r}, ...)")


def check_inputs(graph: Graph, task_name: str, feeds: dict[str, str], model: str) -> None:
    """Every input of the graph must be one the task feeds, with the dtype it feeds."""
    missing = [v for v in graph.inputs if v.name not in feeds]
    if missing:
        raise TGraphError(
            f"task {task_name} cannot feed graph {graph.name!r}: it has no data for input(s) "
            f"{', '.join(f'{v.name} {v.type}' for v in missing)} (task {task_name} feeds "
            f"{', '.join(feeds)}, as the {model} model takes)")
    for v in graph.inputs:
        if v.dtype != feeds[v.name]:
            raise TGraphError(f"task {task_name} feeds {v.name} as {feeds[v.name]}, but graph "
                              f"{graph.name!r} takes {v.type}")


def token_ids(graph: Graph) -> int | None:
    """How many token ids the graph's token inputs accept, if it says."""
    ranges = graph.meta.get("int_ranges") or {}
    found = [ranges[k] for k in ("tokens", "src_tokens", "tgt_tokens") if k in ranges]
    if found:
        return min(found)
    logits = graph.outputs.get("logits")
    width = logits.shape[-1] if logits is not None and logits.shape else None
    return width if isinstance(width, int) else None


def context(graph: Graph, name: str = "tokens") -> int | None:
    """The longest sequence the graph takes on input ``name``: a fixed T, else the zoo
    config's max_len, else None (no limit known)."""
    v = next((v for v in graph.inputs if v.name == name), None)
    if v is not None and len(v.shape) == 2 and isinstance(v.shape[1], int):
        return v.shape[1]
    return (graph.meta.get("config") or {}).get("max_len")


def fixed_batch(graph: Graph) -> int | None:
    """B when the graph's inputs fix it (a leading int dim of every input), else None."""
    sizes = {v.shape[0] for v in graph.inputs if v.shape}
    return sizes.pop() if len(sizes) == 1 and isinstance(next(iter(sizes)), int) else None


def forward_graph(graph: Graph, loss: str = "loss") -> Graph:
    """A copy without the loss and what only it needs (the targets input): the graph
    ``tgraph generate`` and evaluation run."""
    from tgraph.io import copy_graph
    from tgraph.passes import dce

    g = copy_graph(graph)
    g.outputs.pop(loss, None)
    dce(g)
    used = {id(v) for n in g.nodes for v in n.inputs} | {id(v) for v in g.outputs.values()}
    g.inputs = [v for v in g.inputs if id(v) in used]
    g.params = [v for v in g.params if id(v) in used]
    return g.validate()
