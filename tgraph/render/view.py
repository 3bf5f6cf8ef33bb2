"""What a diagram shows, before any drawing: items (ops, collapsed blocks, weights, inputs,
outputs), edges labelled with shapes, and the clusters the items sit in.

``build_view`` turns a Graph into a View at a depth, with identical blocks folded or not;
diff.py builds a View from two graphs; dot.py draws any View.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tgraph.execute import default_dims, node_flops
from tgraph.ir import CONST, INPUT, PARAM, Graph, Node, Value
from tgraph.ops.registry import get_op
from tgraph.render.fold import Folding, find_runs
from tgraph.render.hierarchy import (
    DETAIL_SCOPES,
    Path,
    ScopeTree,
    collapsed_at,
    is_backward,
    split_scope,
)
from tgraph.render.labels import block_lines, is_scalar_const, op_label, role_label
from tgraph.shapes import fmt_shape
from tgraph.summary import scope_numbers

GRAD_PREFIX = "grad/"
HEAT_NAMES = {"flops": "FLOPs", "params": "parameters"}


@dataclass
class Item:
    kind: str  # op | block | weight | const | input | output | grad
    lines: list[str]  # the first line is the title
    cluster: Path
    tooltip: str = ""
    marks: set[str] = field(default_factory=set)  # residual, backward, folded, added, ...
    heat: float | None = None  # FLOPs or parameters relative to the largest item's
    heatmap: list[list[float]] | None = None  # an attention pattern drawn in the box


@dataclass
class Edge:
    src: str
    dst: str
    label: str = ""
    marks: set[str] = field(default_factory=set)  # residual, weight, saved, backward, ...
    port: str = ""  # where it enters its head: "nw"/"ne" for a matmul's left/right operand


@dataclass
class View:
    title: str
    items: dict[str, Item] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)
    cluster_titles: dict[Path, list[str]] = field(default_factory=dict)
    folded_clusters: set[Path] = field(default_factory=set)
    rows: list[list[str]] = field(default_factory=list)  # items on one rank, left to right
    aligned: list[list[str]] = field(default_factory=list)  # items on one rank, any order
    heat: str | None = None
    ids: dict = field(default_factory=dict, repr=False)  # item key -> DOT id

    def add(self, key, item: Item) -> str:
        """Add an item under a hashable key, once; returns its DOT id."""
        if key not in self.ids:
            self.ids[key] = f"n{len(self.ids)}"
            self.items[self.ids[key]] = item
        return self.ids[key]


def residual_inputs(graph: Graph) -> set[tuple[int, int]]:
    """(id(add node), input index) of skip connections: an add one of whose inputs also
    feeds, through at least one other node, the add's other input."""
    order = {id(n): i for i, n in enumerate(graph.nodes)}
    found = set()
    for n in graph.nodes:
        if n.op != "add" or len(n.inputs) != 2 or any(v.kind in (PARAM, CONST) for v in n.inputs):
            continue
        for k, (skip, other) in enumerate([n.inputs, n.inputs[::-1]]):
            if other.node is not None and _reaches(skip, other.node, order):
                found.add((id(n), k))
    return found


def _reaches(v: Value, target: Node, order: dict[int, int]) -> bool:
    """Does value ``v`` flow into ``target``? Searches backward, never before v's producer."""
    floor = order[id(v.node)] if v.node is not None else -1
    stack, seen = [target], set()
    while stack:
        n = stack.pop()
        if get_op(n.op).shape_only:  # token + position embedding is no residual add
            continue
        for u in n.inputs:
            if u is v:
                return True
            p = u.node
            if p is not None and order[id(p)] > floor and id(p) not in seen:
                seen.add(id(p))
                stack.append(p)
    return False


def build_view(graph: Graph, depth: int | None = None, fold: bool = True,
               heat: str | None = None, expand: tuple[str, ...] = ()) -> View:
    """``expand``: names of detail scopes (DETAIL_SCOPES) to draw op by op. A fused node
    (-O2) is drawn as a block of its ops, open or closed by ``depth`` like any other."""
    from tgraph.passes.fuse import expand_fused

    graph = expand_fused(graph)
    closed = DETAIL_SCOPES - set(expand)
    tree = ScopeTree.of(graph)
    folding = Folding.of(tree) if fold else Folding.none()
    view = View(graph.name, heat=heat)
    env = default_dims(graph)
    residual = residual_inputs(graph)
    blocks: dict[str, Path] = {}  # block id -> its scope path
    units: dict[int, str] = {}

    def unit(n: Node) -> str:
        d = folding.drawn(n)
        if id(d) in units:
            return units[id(d)]
        path = split_scope(d.scope)
        box = collapsed_at(path, depth, closed)
        if box is None and depth is not None and is_backward(path) and not tree.children.get(path):
            box = path  # the backward of a block of primitives (ln_f's) is one box, as its
            # siblings' (the layers' ln_1) are at this depth
        if box is None:
            u = view.add(("op", id(d)), Item("op", [op_label(d)], path, _tip(d)))
            if d.outputs and any((id(d), k) in residual for k in range(2)):
                view.items[u].marks.add("residual")
        else:
            u = view.add(("block", box), Item("block", [], box[:-1]))
            blocks[u] = box
        if is_backward(path):
            view.items[u].marks.add("backward")
        units[id(d)] = u
        return u

    stats: dict[str, dict] = {}  # op id -> its FLOPs and the weights beside it
    seen_edges: set = set()
    for n in graph.nodes:
        dst = unit(n)
        d = folding.drawn(n)
        if dst not in blocks and d is n:
            stats[dst] = {"flops": node_flops(get_op(n.op), n, env),
                          "params": sum(math.prod(v.shape) for v in n.inputs if v.kind == PARAM)}
        for k, v in enumerate(n.inputs):
            if v.kind in (PARAM, CONST):
                if d is n and view.items[dst].kind == "op" and not is_scalar_const(v):
                    _weight(view, dst, n, k, v)
                continue
            if v.kind == INPUT:
                src = view.add(("input", v.name), Item("input", [f"input {v.name}",
                               f"{fmt_shape(v.shape)} {v.dtype}"], (), v.name, {"io"}))
                key = (src, dst, v.name)
            else:
                if folding.crosses_copies(v.node, n):
                    continue
                src = unit(v.node)
                dv = folding.drawn(v.node)
                key = (src, dst, id(dv), v.node.outputs.index(v))
            if src == dst or key in seen_edges:
                continue
            seen_edges.add(key)
            marks = _edge_marks(view, src, dst, (id(n), k) in residual)
            if get_op(n.op).shape_only:
                marks.add("shape")
            view.edges.append(Edge(src, dst, ("shape of " if "shape" in marks else "")
                                   + fmt_shape(v.shape), marks, _operand_port(n, k)))
    grads_in: dict[str, int] = {}  # block id -> gradient outputs it produces
    copies: dict[str, list[str]] = {}  # gradient output id -> the outputs it stands for
    for name, v in graph.outputs.items():
        grad = name.startswith(GRAD_PREFIX)
        if grad and v.node is not None and unit(v.node) in blocks:
            grads_in[unit(v.node)] = grads_in.get(unit(v.node), 0) + 1
            continue
        short = name[len(GRAD_PREFIX):].rpartition("/")[2]
        key = ("output", name)
        if grad and v.node is not None and id(v.node) in folding.copy_of:
            # the same gradient of every copy of a folded block: one output, drawn once
            key = ("grad", id(folding.drawn(v.node)), v.node.outputs.index(v), short)
        out = view.add(key, Item(
            "grad" if grad else "output",
            [f"∂L/∂{short}" if grad else f"output {name}",
             *([] if grad else [f"{fmt_shape(v.shape)} {v.dtype}"])],
            # a gradient sits beside the op that makes it, in that op's box
            view.items[unit(v.node)].cluster if grad and v.node is not None else (), name,
            {"backward"} if grad else {"io"}))
        copies.setdefault(out, []).append(name)
        if v.node is not None and len(copies[out]) == 1:
            src = unit(v.node)
            view.edges.append(Edge(src, out, fmt_shape(v.shape),
                                   {"backward"} if grad else set()))
    for out, names in copies.items():
        if len(names) > 1:
            view.items[out].lines[0] += f" ×{len(names)}"
            view.items[out].tooltip = f"{names[0]} … {names[-1]}"
    _finish_blocks(view, blocks, stats, scope_numbers(graph, env), folding, graph.name,
                   grads_in)
    view.rows = projection_rows(graph, tree, units, view)
    if not fold:
        view.aligned = aligned_copies(tree, units, view)
    add_cluster_titles(view, folding)
    if heat:
        _shade(view, stats, heat)
    return view


def projection_rows(graph: Graph, tree: ScopeTree, units: dict[int, str], view: View):
    """Projections of values from outside their scope (Q, K and V of every head) on one
    rank, in build order: Q, K, V left to right, heads in index order. Identical sibling
    scopes (the heads) share one row, found by structure whether folded or not."""
    runs, _ = find_runs(tree)
    in_run = {m for run in runs for m in run.members}
    rows: dict[Path, list[str]] = {}
    for n in graph.nodes:
        u = units.get(id(n))
        if u is None or view.items[u].kind != "op" or role_label(n) is None or n.op != "matmul":
            continue
        path = split_scope(n.scope)
        data = [v for v in n.inputs if v.kind != PARAM]
        if any(v.node is not None and split_scope(v.node.scope)[:len(path)] == path
               for v in data):
            continue  # reads a value made in its own scope: not where the scope starts
        key = path[:-1] if path in in_run else path
        if u not in rows.setdefault(key, []):
            rows[key].append(u)
    return [r for r in rows.values() if len(r) > 1]


def aligned_copies(tree: ScopeTree, units: dict[int, str], view: View) -> list[list[str]]:
    """Identical blocks side by side (the heads, unfolded) drawn alike: the i-th op of each
    copy on one rank, so no copy's short path (V) floats to a rank of its own."""
    runs, ordered = find_runs(tree)
    groups = []
    for run in runs:
        members = [ordered[m] for m in run.members]
        inside = [{id(n) for n in nodes} for nodes in members]
        if any(v.node is not None and id(v.node) in other
               for nodes, own in zip(members, inside) for n in nodes for v in n.inputs
               for other in inside if other is not own):
            continue  # one copy feeds the next (layers): they stack, not align
        for copies in zip(*members):
            ids = [units.get(id(n)) for n in copies]
            if all(u is not None and view.items[u].kind == "op" for u in ids):
                groups.append(ids)
    return groups


def _operand_port(n: Node, k: int) -> str:
    """A · B ≠ B · A: a matmul of two activations takes A at its top left, B at its top right."""
    if n.op != "matmul" or any(v.kind in (PARAM, CONST) for v in n.inputs):
        return ""
    return "nw" if k == 0 else "ne"


def _tip(n: Node) -> str:
    outs = ", ".join(f"{fmt_shape(v.shape)} {v.dtype}" for v in n.outputs)
    return f"{n.name} ({n.op}) in {n.scope or '<top level>'} → {outs}"


def _weight(view: View, dst: str, n: Node, k: int, v: Value) -> None:
    """One small weight (or constant) node per consumer, drawn beside it: never a long
    edge from one shared node, which both misleads and slows the layout."""
    kind = "weight" if v.kind == PARAM else "const"
    w = view.add((kind, id(n), k), Item(kind, [v.name.rpartition("/")[2], fmt_shape(v.shape)],
                                        view.items[dst].cluster, v.name))
    view.items[w].marks |= view.items[dst].marks & {"backward"}
    view.edges.append(Edge(w, dst, "", {"weight"}))


def _edge_marks(view: View, src: str, dst: str, skip: bool) -> set[str]:
    back_src = "backward" in view.items[src].marks
    back_dst = "backward" in view.items[dst].marks
    marks = {"residual"} if skip else set()
    if back_dst:
        marks.add("backward" if back_src else "saved")
    return marks


def _finish_blocks(view: View, blocks: dict[str, Path], stats, numbers, folding: Folding,
                   graph_name: str, grads_in: dict[str, int]) -> None:
    """Title, shapes and numbers of each collapsed block: the numbers are ``tgraph info``'s
    row for its scope, per copy and in all when the block stands for a folded run."""
    ins: dict[str, list[str]] = {u: [] for u in blocks}
    outs: dict[str, list[str]] = {u: [] for u in blocks}
    for e in view.edges:
        for u, side in ((e.dst, ins), (e.src, outs)):
            if u in side and e.label and e.label not in side[u] and "shape" not in e.marks:
                side[u].append(e.label)
    for u, path in blocks.items():
        run = folding.run_at.get(path)
        title = run.title() if run else (path[-1] if path else graph_name)
        params, flops = numbers.get("/".join(path), (0, 0))
        copies = [numbers.get("/".join(m), (0, 0)) for m in run.members] if run else []
        stats[u] = {"params": sum(p for p, _ in copies) if run else params,
                    "flops": sum(f for _, f in copies) if run else flops}
        item = view.items[u]
        item.lines = block_lines(title, ins[u], outs[u], params, flops, copies)
        if run:
            item.lines.insert(1, run.span())
            item.marks.add("folded")
        if grads_in.get(u):
            item.lines.append(f"→ {grads_in[u]} gradient outputs ∂L/∂w")
        item.tooltip = "/".join(path) or graph_name


def add_cluster_titles(view: View, folding: Folding) -> None:
    for item in list(view.items.values()):
        path = item.cluster
        for i in range(1, len(path) + 1):
            p = path[:i]
            if p in view.cluster_titles:
                continue
            run = folding.run_at.get(p)
            view.cluster_titles[p] = [run.title(), f"{run.span()}: one drawn"] if run else [p[-1]]
            if run:
                view.folded_clusters.add(p)


def _shade(view: View, stats, heat: str) -> None:
    total = sum(s[heat] for s in stats.values()) or 1
    top = max((s[heat] for s in stats.values()), default=0) or 1
    for u, s in stats.items():
        share = s[heat] / total
        view.items[u].heat = s[heat] / top
        if view.items[u].kind == "block":
            view.items[u].lines.append(f"{100 * share:.1f}% of {HEAT_NAMES[heat]}")
