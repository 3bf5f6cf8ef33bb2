"""Reverse-mode autodiff as a graph transformation, not a tape.

``grad(graph, loss, wrt)`` returns a new graph holding the forward nodes, the backward
nodes that each op's VJP rule emits as ordinary graph ops, and one output per gradient,
``grad/<name>``. So the backward pass can be rendered, saved, optimised, run on any backend
and differentiated again (a Hessian-vector product is ``grad`` of a ``grad`` graph).

Backward nodes sit in scope ``backward/<forward scope>`` and carry
``meta["forward"] = <forward node name>``; forward values they read (the saved activations)
are plain edges from the forward part. A value used in several places gets the sum of their
gradients, built as a balanced tree of adds in ``backward/<the scope holding every use>``
and marked ``meta["sums"] = <value name>``: a layer sums its own input's gradient (residual
path plus branch), and a LayerNorm output read by 12 heads is summed in the attention block,
not inside the heads, so identical forward blocks get identical backward blocks. Only nodes on a path from a ``wrt`` value to the
loss are differentiated, and whatever no output needs is pruned afterwards.
"""

from __future__ import annotations

from tgraph.errors import TGraphError
from tgraph.ir import Graph, Node, Value
from tgraph.shapes import FLOAT_DTYPES, fmt_shape


def grad(graph: Graph, loss: str | Value = "loss", wrt=None, prefix: str = "grad") -> Graph:
    """Forward + backward graph with outputs ``{prefix}/<name>`` = d loss / d wrt.

    ``loss`` names a scalar output (or value); ``wrt`` lists value names (parameters,
    float inputs, even intermediates); by default every float parameter the loss depends
    on. ``prefix`` tells second-order gradients apart from first-order ones.
    """
    from tgraph.io import copy_graph
    from tgraph.passes import dce

    g = copy_graph(graph)  # never touch the caller's graph
    by_name = {v.name: v for v in g.values()}
    y = _resolve_loss(g, by_name, loss.name if isinstance(loss, Value) else loss)
    upstream = ancestors(g, [y])
    if wrt is None:
        targets = _trainable(g, upstream)
    else:
        targets = [_resolve(by_name, name, "wrt") for name in wrt]
        for t in targets:
            if not _is_float(t):
                raise TGraphError(f"cannot differentiate with respect to {t.name!r}: it is "
                                  f"{t.dtype}, and only float values have gradients")
    with g.scope("backward"):
        seed = g.const(1.0, "seed", y.dtype)
    grads = backprop(g, {y: seed}, targets, upstream)
    for t in targets:
        name = f"{prefix}/{t.name}"
        if name in g.outputs:
            raise TGraphError(f"graph {g.name!r} already has an output {name!r}; "
                              "pass another prefix (second-order gradients)")
        g.set_output(name, grads[t])
    g.meta = {**g.meta, prefix: {"loss": y.name, "wrt": {t.name: f"{prefix}/{t.name}"
                                                         for t in targets}}}
    dce(g)
    return g.validate()


def backprop(g: Graph, seeds: dict[Value, Value], targets: list[Value], upstream: set,
             nodes: list[Node] | None = None, nest: bool = True) -> dict:
    """Walk ``nodes`` (default: the graph's) between targets and the seeded values in
    reverse, calling each VJP; returns the total cotangent of every target. ``upstream``:
    the values the seeded ones depend on. ``nest=False`` (a VJP differentiating a body it
    emitted, like a fused node's) adds no backward scopes or tags of its own."""
    from tgraph.ops.elementwise import zeros
    from tgraph.ops.registry import get_op

    depends = set(targets)
    active: list[Node] = []
    for n in g.nodes if nodes is None else nodes:
        if any(v in depends for v in n.inputs):
            outs = [v for v in n.outputs if _is_float(v)]
            depends.update(outs)
            if any(v in upstream for v in outs):
                active.append(n)
    # value -> [(cotangent, scope of the forward node it came through)]
    contribs: dict[Value, list[tuple[Value, str]]] = {y: [(c, "")] for y, c in seeds.items()}
    for node in reversed(active):
        cts = [_total(g, v, contribs.pop(v, ()), nest) for v in node.outputs]
        if all(c is None for c in cts):
            continue
        if nest:
            with g.scope(f"backward/{node.scope}"), _tagged(g, forward=node.name):
                in_cts = get_op(node.op).vjp(node, cts)
        else:
            in_cts = get_op(node.op).vjp(node, cts)
        for v, c in zip(node.inputs, in_cts):
            if c is not None and v in depends:
                _check_cotangent(node, v, c)
                contribs.setdefault(v, []).append((c, node.scope))
    out = {}
    for t in targets:
        total = _total(g, t, contribs.get(t, ()), nest)
        if total is None and nest:  # asked for, but unreachable
            with g.scope(f"backward/{t.scope}"), _tagged(g, forward=t.name):
                total = zeros(t)
        out[t] = total
    return out


class _tagged:
    """Mark the nodes added inside the block: ``forward=`` the forward node whose VJP
    emitted them, or ``sums=`` the value whose fan-out gradients they add up."""

    def __init__(self, g: Graph, **meta: str):
        self.g, self.meta = g, meta

    def __enter__(self):
        self.start = len(self.g.nodes)

    def __exit__(self, *exc):
        for n in self.g.nodes[self.start:]:
            n.meta.update(self.meta)


def _total(g: Graph, v: Value, parts: list[tuple[Value, str]], nest: bool = True) -> Value | None:
    """Fan-out: the gradient of ``v`` is the sum of what each use contributed.

    The adds go in the scope holding every use, not in whichever use came last, and form a
    balanced tree (pairwise summation), so the sum for N uses has the same shape wherever
    it occurs and no use's scope holds part of another's."""
    if len(parts) < 2:
        return parts[0][0] if parts else None
    where = f"backward/{common_scope(s for _, s in parts)}" if nest else ""
    with g.scope(where), _tagged(g, sums=v.name):
        terms = [c for c, _ in parts]
        while len(terms) > 1:
            pairs = [a + b for a, b in zip(terms[::2], terms[1::2])]
            terms = pairs + terms[2 * len(pairs):]
    return terms[0]


def common_scope(scopes) -> str:
    """The innermost scope containing all of ``scopes`` ("" for the top level)."""
    paths = [s.split("/") if s else [] for s in scopes]
    common = []
    for parts in zip(*paths):
        if any(p != parts[0] for p in parts):
            break
        common.append(parts[0])
    return "/".join(common)


def _check_cotangent(node: Node, v: Value, c: Value) -> None:
    if c.type != v.type:
        raise TGraphError(f"the VJP of {node.where()} gave a gradient {c.dtype}"
                          f"[{fmt_shape(c.shape)}] for input {v.name!r} of type {v.dtype}"
                          f"[{fmt_shape(v.shape)}]")


def trainable_params(graph: Graph, loss: str = "loss") -> list[str]:
    """The parameters ``grad`` differentiates by default: float, and the loss depends on them."""
    y = _resolve_loss(graph, {v.name: v for v in graph.values()}, loss)
    return [p.name for p in _trainable(graph, ancestors(graph, [y]))]


def _trainable(g: Graph, upstream: set) -> list[Value]:
    return [p for p in g.params if _is_float(p) and p in upstream]


def _is_float(v: Value) -> bool:
    return v.dtype in FLOAT_DTYPES


def vjp_of_expansion(node: Node, grads: list, expand) -> list:
    """An op's VJP from its expansion: ``expand(*node.inputs)`` emits the op as other ops
    and returns its outputs, which are then differentiated like any graph (a fused node's
    body, LayerNorm's gradient, attention); the op's own form stays for the forward."""
    g = node.outputs[0].graph
    start = len(g.nodes)
    outs = expand(*node.inputs)
    emitted = g.nodes[start:]
    seeds = {v: c for v, c in zip(outs, grads) if c is not None}
    up = ancestors(g, seeds, emitted)
    wrt = [v for v in node.inputs if v in up and v.dtype.startswith("float")]
    cts = backprop(g, seeds, wrt, up, emitted, nest=False)
    return [cts.get(v) for v in node.inputs]


def ancestors(g: Graph, ys, nodes: list[Node] | None = None) -> set:
    """Every value the values ``ys`` depend on, themselves included."""
    seen = set(ys)
    for n in reversed(g.nodes if nodes is None else nodes):
        if any(v in seen for v in n.outputs):
            seen.update(n.inputs)
    return seen


def _resolve(by_name: dict, name: str, what: str) -> Value:
    try:
        return by_name[name]
    except KeyError:
        raise TGraphError(f"{what}: the graph has no value named {name!r}") from None


def _resolve_loss(g: Graph, by_name: dict, name: str) -> Value:
    y = g.outputs.get(name) or _resolve(by_name, name, "loss")
    if y.shape != () or not _is_float(y):
        raise TGraphError(f"the loss must be a float scalar; {name!r} is {y.type}")
    return y
