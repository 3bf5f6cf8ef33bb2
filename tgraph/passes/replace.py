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

from dataclasses import dataclass

from tgraph.errors import ShapeError, TGraphError
from tgraph.ir import PARAM, Graph, Node, Value, infer_types
from tgraph.types import TensorType


def replace_op(graph: Graph, old: str, new: str, scope: str | None = None, **attrs) -> int:
    """Replace every ``old`` node (under ``scope``, if given) by op ``new``; returns how
    many nodes were replaced. Every node is checked first: an error leaves the graph as
    it was."""
    from tgraph.ops import get_op

    opdef = get_op(new)
    targets = [n for n in graph.nodes if n.op == old and _under(n.scope, scope)]
    plans = _plans(graph, targets, opdef, attrs)
    for plan in plans:
        node = plan.node
        for p in plan.owned:
            graph._names.discard(p.name)
        at = min((graph.params.index(p) for p in plan.owned), default=None)
        graph.params = [p for p in graph.params if p not in plan.owned]
        at = _param_slot(graph, node) if at is None else at
        graph.params[at:at] = plan.params
        graph._names.update(p.name for p in plan.params)
        _swap_node(graph, node, new, [*plan.data, *plan.params], plan.attrs)
    if targets and scope is None:
        _record(graph, old, new)
    return len(targets)


@dataclass
class _Plan:
    node: Node
    data: list[Value]  # the inputs that are not parameters, kept
    attrs: dict
    owned: list[Value]  # parameters no other node reads (but replaced ones): they go
    params: list[Value]  # the new op's declared parameters, not yet in the graph


def _plans(graph: Graph, targets: list[Node], opdef, attrs: dict) -> list[_Plan]:
    """What each replacement does, checked without touching the graph: a data input to
    keep, free names for the new parameters, and the new op giving the old outputs' types."""
    plans, taken, claimed = [], set(), set()
    replaced = set(map(id, targets))
    others = {id(v) for n in graph.nodes if id(n) not in replaced for v in n.inputs}
    for node in targets:
        data = [v for v in node.inputs if v.kind != PARAM]
        if not data:
            raise TGraphError(f"replace_op: {node.where()} has no data input to give "
                              f"{opdef.name!r}")
        owned = [v for v in dict.fromkeys(node.inputs)
                 if v.kind == PARAM and id(v) not in others and id(v) not in claimed]
        claimed.update(map(id, owned))
        node_attrs = {**{k: v for k, v in node.attrs.items() if opdef.takes_attr(k)}, **attrs}
        params = []
        for spec in opdef.params(data[0].type, **node_attrs):
            name = f"{node.scope}/{spec.name}" if node.scope else spec.name
            if name in taken or (name in graph._names and name not in {p.name for p in owned}):
                raise TGraphError(f"replace_op: the new parameter {name!r} clashes with a "
                                  f"value of graph {graph.name!r}")
            taken.add(name)
            params.append(Value(name, TensorType(data[0].dtype, tuple(spec.shape)), PARAM,
                                graph=graph, init=dict(spec.init)))
        trial = Node(node.name, opdef.name, [*data, *params], [], node_attrs, node.scope)
        types = infer_types(opdef, trial)
        if types != [v.type for v in node.outputs]:
            raise ShapeError(f"replace_op: {opdef.name} would give "
                             f"{', '.join(map(str, types))} where {node.where()} gives "
                             f"{', '.join(str(v.type) for v in node.outputs)}")
        plans.append(_Plan(node, data, node_attrs, owned, params))
    return plans


def _under(node_scope: str, scope: str | None) -> bool:
    return scope is None or node_scope == scope or node_scope.startswith(scope.rstrip("/") + "/")


def _param_slot(graph: Graph, node: Node) -> int:
    """Just after the last parameter the nodes before ``node`` read: where a builder that
    creates a node's parameters right before it would have put them."""
    index = {id(p): i for i, p in enumerate(graph.params)}
    before = graph.nodes[:graph.nodes.index(node)]
    return max((index[id(v)] + 1 for n in before for v in n.inputs if id(v) in index), default=0)


def _swap_node(graph: Graph, node: Node, op: str, inputs: list[Value], attrs: dict) -> None:
    """Put a node of ``op`` where ``node`` was; its outputs replace node's everywhere."""
    from tgraph.ops import get_op

    for v in node.outputs:
        graph._names.discard(v.name)
    graph._names.discard(node.name)
    name = graph._unique(f"{node.scope}/{op}" if node.scope else op)
    fresh = Node(name, op, inputs, [], attrs, node.scope, dict(node.meta))
    types = infer_types(get_op(op), fresh)
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
