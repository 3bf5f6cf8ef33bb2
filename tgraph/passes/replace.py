"""``replace_op``: swap every node of one op for another op, in place, keeping scopes.

    replace_op(g, "layernorm", "my_rmsnorm")      # what build_model(norm_op=...) builds
    replace_op(g, "gelu", "swish", beta=1.5)

Each replaced node keeps its data inputs (the inputs that are not parameters), its scope,
its outputs' types and its meta; the new op gets the parameters it declares
(``OpDef.params``), created in the node's scope, and the old node's attrs that its shape
rule names (a LayerNorm's eps passes to an RMSNorm), updated by ``attrs``. Parameters only
the old nodes used go; new ones take their place in the parameter list, so a model built
with the option and a saved graph rewritten by this pass have the same parameter names in
the same order: the same weights, and ``init_params`` gives the same numbers.
"""

from __future__ import annotations

from tgraph.errors import ShapeError, TGraphError
from tgraph.ir import PARAM, Graph, Node, Value, infer_types
from tgraph.types import TensorType


def replace_op(graph: Graph, old: str, new: str, scope: str | None = None, **attrs) -> int:
    """Replace every ``old`` node (under ``scope``, if given) by op ``new``; returns how
    many nodes were replaced."""
    from tgraph.ops import get_op

    opdef = get_op(new)
    targets = [n for n in graph.nodes if n.op == old and _under(n.scope, scope)]
    for node in targets:
        data = [v for v in node.inputs if v.kind != PARAM]
        if not data:
            raise TGraphError(f"replace_op: {node.where()} has no data input to give {new!r}")
        kept = {k: v for k, v in node.attrs.items() if opdef.takes_attr(k)}
        node_attrs = {**kept, **attrs}
        dropped = _drop_params(graph, node)
        at = dropped if dropped is not None else _param_slot(graph, node)
        params = [_new_param(graph, node.scope, p, data[0].dtype)
                  for p in opdef.params(data[0].type, **node_attrs)]
        graph.params[at:at] = params
        _swap_node(graph, node, new, [*data, *params], node_attrs)
    if targets and scope is None:
        _record(graph, old, new)
    return len(targets)


def _under(node_scope: str, scope: str | None) -> bool:
    return scope is None or node_scope == scope or node_scope.startswith(scope.rstrip("/") + "/")


def _drop_params(graph: Graph, node: Node) -> int | None:
    """Remove the parameters only ``node`` reads; the index of the first one, if any."""
    others = {id(v) for n in graph.nodes if n is not node for v in n.inputs}
    first = None
    for p in [v for v in node.inputs if v.kind == PARAM and id(v) not in others]:
        i = graph.params.index(p)
        first = i if first is None else min(first, i)
        graph.params.pop(i)
        graph._names.discard(p.name)
    return first


def _param_slot(graph: Graph, node: Node) -> int:
    """Just after the last parameter the nodes before ``node`` read: where a builder that
    creates a node's parameters right before it would have put them."""
    index = {id(p): i for i, p in enumerate(graph.params)}
    before = graph.nodes[:graph.nodes.index(node)]
    return max((index[id(v)] + 1 for n in before for v in n.inputs if id(v) in index), default=0)


def _new_param(graph: Graph, scope: str, spec, dtype: str) -> Value:
    name = f"{scope}/{spec.name}" if scope else spec.name
    if name in graph._names:
        raise TGraphError(f"replace_op: the new parameter {name!r} clashes with a value of "
                          f"graph {graph.name!r}")
    graph._names.add(name)
    return Value(name, TensorType(dtype, tuple(spec.shape)), PARAM, graph=graph,
                 init=dict(spec.init))


def _swap_node(graph: Graph, node: Node, op: str, inputs: list[Value], attrs: dict) -> None:
    """Put a node of ``op`` where ``node`` was; its outputs replace node's everywhere."""
    from tgraph.ops import get_op

    for v in node.outputs:
        graph._names.discard(v.name)
    graph._names.discard(node.name)
    name = graph._unique(f"{node.scope}/{op}" if node.scope else op)
    fresh = Node(name, op, inputs, [], attrs, node.scope, dict(node.meta))
    types = infer_types(get_op(op), fresh)
    if types != [v.type for v in node.outputs]:
        raise ShapeError(f"replace_op: {op} would give {', '.join(map(str, types))} where "
                         f"{node.where()} gives {', '.join(str(v.type) for v in node.outputs)}")
    fresh.outputs = [Value(name if len(types) == 1 else f"{name}:{i}", t, node=fresh,
                           graph=graph) for i, t in enumerate(types)]
    graph._names.update(v.name for v in fresh.outputs)
    graph.nodes[graph.nodes.index(node)] = fresh
    renamed = {id(a): b for a, b in zip(node.outputs, fresh.outputs)}
    for n in graph.nodes:
        n.inputs = [renamed.get(id(v), v) for v in n.inputs]
    for k, v in graph.outputs.items():
        graph.outputs[k] = renamed.get(id(v), v)


def _record(graph: Graph, old: str, new: str) -> None:
    """Keep a zoo model's recorded config true: a key that named the old op (norm_op,
    activation) names the new one, once no node of the old op is left."""
    config = graph.meta.get("config")
    if isinstance(config, dict) and old in config.values():
        graph.meta = {**graph.meta, "config": {k: new if v == old else v
                                               for k, v in config.items()}}
