"""The model summary users know from torchinfo and Keras, computed from the graph alone:
for every scope down to a depth, the shapes leaving it, its parameters, its FLOPs and the
memory of the activations its nodes produce, for given dims.

A scope's numbers include everything nested inside it. Nodes and parameters outside every
scope (a loss at the top level, say) get a ``(top level)`` row so the rows add up to the total.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np

from tgraph.ir import Graph
from tgraph.shapes import eval_shape, fmt_shape

TOP_LEVEL = "(top level)"


@dataclass
class ScopeRow:
    scope: str  # a path such as "layer_0/attn", or TOP_LEVEL
    depth: int
    params: int = 0
    flops: int = 0
    activation_bytes: int = 0
    outputs: list[str] = field(default_factory=list)  # shapes of values leaving the scope


@dataclass
class Summary:
    name: str
    dims: dict[str, int]
    depth: int
    rows: list[ScopeRow]
    total: ScopeRow
    peak_bytes: int  # most activation bytes alive at once when run, freeing at last use

    def to_json(self) -> dict:
        return asdict(self)


def scope_numbers(graph: Graph, env: Mapping[str, int]) -> dict[str, tuple[int, int]]:
    """(parameters, FLOPs) of every scope path, nested scopes included ("" is the whole
    graph). A parameter counts in the scope that owns it, the one in its name, once, however
    many scopes use it (a tied embedding table is the embedding's, not the head's)."""
    from tgraph.execute import node_flops
    from tgraph.ops.registry import get_op

    params: dict[str, int] = {}
    flops: dict[str, int] = {}

    def add(into: dict, scope: str, amount: int) -> None:
        parts = [p for p in scope.split("/") if p]
        for i in range(len(parts) + 1):
            key = "/".join(parts[:i])
            into[key] = into.get(key, 0) + amount

    for n in graph.nodes:
        add(flops, n.scope, node_flops(get_op(n.op), n, env))
    for p in graph.params:
        add(params, p.name.rpartition("/")[0], math.prod(p.shape))
    return {k: (params.get(k, 0), flops.get(k, 0)) for k in {*params, *flops}}


def summarize(graph: Graph, dims: Mapping[str, int] | None = None, depth: int = 2) -> Summary:
    """Per-scope parameters, FLOPs and activation bytes, scopes deeper than ``depth`` folded
    into their ancestor at ``depth``. Symbolic dims default to the graph's hints, else 1."""
    from tgraph.execute import Executable, default_dims, live_bytes_peak

    env = {**default_dims(graph), **(dims or {})}
    rows: dict[str, ScopeRow] = {}
    total = ScopeRow("total", 0)

    def rows_for(scope: str) -> list[ScopeRow]:
        parts = [p for p in scope.split("/") if p][:depth]
        if not parts:
            return [rows.setdefault(TOP_LEVEL, ScopeRow(TOP_LEVEL, 1)), total] if depth else [total]
        paths = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        return [rows.setdefault(p, ScopeRow(p, p.count("/") + 1)) for p in paths] + [total]

    users = graph.users()
    graph_outputs = {id(v) for v in graph.outputs.values()}
    for n in graph.nodes:
        act = sum(math.prod(eval_shape(v.shape, env)) * np.dtype(v.dtype).itemsize
                  for v in n.outputs)
        for row in rows_for(n.scope):
            row.activation_bytes += act
        for v in n.outputs:
            leaves = id(v) in graph_outputs
            for row in rows_for(n.scope)[:-1]:
                outside = leaves or any(not _inside(u.scope, row.scope) for u in users[v])
                if outside and fmt_shape(v.shape) not in row.outputs:
                    row.outputs.append(fmt_shape(v.shape))
    for p in graph.params:
        rows_for(p.name.rpartition("/")[0])
    numbers = scope_numbers(graph, env)
    for row in [*rows.values(), total]:
        scope = "" if row is total else row.scope
        if scope == TOP_LEVEL:  # what no scope holds: the total less the scopes' rows
            inner = [numbers[r.scope] for r in rows.values() if r.depth == 1 and r is not row]
            row.params = numbers.get("", (0, 0))[0] - sum(p for p, _ in inner)
            row.flops = numbers.get("", (0, 0))[1] - sum(f for _, f in inner)
        else:
            row.params, row.flops = numbers.get(scope, (0, 0))
    ordered = sorted(rows.values(), key=lambda r: r.scope == TOP_LEVEL)  # stable: build order
    return Summary(graph.name, env, depth, ordered, total,
                   live_bytes_peak(Executable(graph), env))


def _inside(scope: str, row_scope: str) -> bool:
    if row_scope == TOP_LEVEL:
        return not scope
    return scope == row_scope or scope.startswith(row_scope + "/")


def format_table(s: Summary) -> str:
    """The summary as aligned text, children indented under their parents."""
    header = ("scope", "output", "params", "FLOPs", "activations")
    body = [(("  " * (r.depth - 1)) + r.scope.rpartition("/")[2], _fmt_outputs(r.outputs),
             f"{r.params:,}", human(r.flops), human(r.activation_bytes, "B"))
            for r in s.rows]
    body.append(("total", "", f"{s.total.params:,}", human(s.total.flops),
                 human(s.total.activation_bytes, "B")))
    widths = [max(len(line[i]) for line in (header, *body)) for i in range(len(header))]

    def line(cells):
        first, *rest = cells
        return "  ".join([first.ljust(widths[0]), rest[0].ljust(widths[1]),
                          *(c.rjust(w) for c, w in zip(rest[1:], widths[2:]))]).rstrip()

    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    dims = ", ".join(f"{k}={v}" for k, v in s.dims.items()) or "no symbolic dims"
    return "\n".join([f"{s.name} at depth {s.depth} ({dims})", line(header), rule,
                      *map(line, body[:-1]), *([rule] if s.rows else []), line(body[-1]),
                      "peak activation memory when run (freeing at last use): "
                      + human(s.peak_bytes, "B")])


def _fmt_outputs(outputs: list[str]) -> str:
    return ", ".join(outputs[:2]) + (f" (+{len(outputs) - 2})" if len(outputs) > 2 else "")


def human(n: int, unit: str = "") -> str:
    """1234567 -> '1.23M'; with unit 'B', binary steps: 1536 -> '1.50 KiB'."""
    step, names = (1024, ("B", "KiB", "MiB", "GiB", "TiB")) if unit == "B" else \
        (1000, ("", "K", "M", "G", "T"))
    value, i = float(n), 0
    while abs(value) >= step and i < len(names) - 1:
        value, i = value / step, i + 1
    if i == 0:
        return f"{n} B" if unit == "B" else str(n)
    return f"{value:.2f} {names[i]}" if unit == "B" else f"{value:.2f}{names[i]}"
