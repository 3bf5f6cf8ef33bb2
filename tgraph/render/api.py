"""render() and render_diff(): a graph (or two) to an SVG, PNG, PDF or DOT file.

Layout runs in Graphviz's ``dot`` under a time budget. When a view is too big to lay out
in time, the full DOT is kept beside the output and a collapsed depth is drawn instead,
said on stderr. Without ``dot`` installed the DOT is still written, and the error says
where.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tgraph.errors import TGraphError
from tgraph.io import atomic_write
from tgraph.ir import Graph
from tgraph.render.dot import to_dot
from tgraph.render.hierarchy import BACKWARD, DETAIL_SCOPES, split_scope
from tgraph.render.view import HEAT_NAMES, View, build_view

FORMATS = ("svg", "png", "pdf", "dot")
FALLBACK_DEPTH = 2


@dataclass
class Rendered:
    path: Path
    items: int  # drawn nodes
    edges: int
    depth: int | None  # the depth actually drawn (differs after a fallback)
    seconds: float
    note: str = ""  # what the caller should tell the user (a fallback taken)


def view_of(graph: Graph, depth: int | None = None, fold: bool | None = None,
            color: str | None = None, expand: tuple[str, ...] = ()) -> View:
    """The View ``render`` draws (checked arguments, folding on by default)."""
    if color is not None and color not in HEAT_NAMES:
        raise TGraphError(f"unknown colour measure {color!r}; choose {' or '.join(HEAT_NAMES)}")
    if depth is not None and depth < 0:
        raise TGraphError(f"depth must be 0 or more, got {depth}")
    from tgraph.schema import MAX_SCOPE_DEPTH

    deep = next((n for n in graph.nodes if n.scope.count("/") >= MAX_SCOPE_DEPTH), None)
    if deep is not None:  # nested boxes are drawn recursively
        raise TGraphError(f"{deep.where()[:120]}: scopes nest at most {MAX_SCOPE_DEPTH} levels "
                          "deep in a diagram")
    unknown = set(expand) - DETAIL_SCOPES
    if unknown:
        raise TGraphError(f"cannot expand {', '.join(sorted(unknown))}: scopes drawn as one "
                          f"box by default are {', '.join(sorted(DETAIL_SCOPES))}")
    return build_view(graph, depth, True if fold is None else fold, color, tuple(expand))


def with_backward(graph: Graph) -> Graph:
    """The graph with its backward pass: ``grad`` of the ``loss`` output, unless present."""
    if any(split_scope(n.scope)[:1] == (BACKWARD,) for n in graph.nodes):
        return graph
    if "loss" not in graph.outputs:
        raise TGraphError(f"graph {graph.name!r} has no 'loss' output to differentiate; "
                          "build the model with a loss (--loss) to draw the backward pass")
    from tgraph.autodiff import grad

    return grad(graph, "loss")


def render(graph: Graph, path, depth: int | None = None, fold: bool | None = None,
           backward: bool = False, rankdir: str = "TB", color: str | None = None,
           time_budget: float = 60.0, expand: tuple[str, ...] = (),
           attention=None) -> Rendered:
    """Draw ``graph`` into ``path`` (.svg, .png, .pdf or .dot).

    depth: scopes deeper than this collapse into one box (None: every primitive).
    fold: identical sibling blocks drawn once as "×N" (default on).
    backward: draw the backward pass beside the forward one.
    color: "flops" or "params" shades each box by its share.
    expand: detail scopes drawn as one box by default ("positions") to draw op by op.
    attention: ``values.Pattern``s from a run, drawn inside their softmax (or head) boxes.
    """
    from tgraph.render.values import attach_patterns

    if backward:
        graph = with_backward(graph)
    view = attach_patterns(graph, view_of(graph, depth, fold, color, expand), attention)
    try:
        return write_view(view, path, rankdir, time_budget, depth)
    except subprocess.TimeoutExpired:
        pass
    full = Path(path).with_suffix(".full.dot")
    _write_text(full, to_dot(view, rankdir).source)
    fallback = FALLBACK_DEPTH if depth is None or depth > FALLBACK_DEPTH else max(depth - 1, 0)
    note = (f"laying out {len(view.items)} boxes took over {time_budget:g} s; drew depth "
            f"{fallback} folded instead (the full DOT is in {full}; lay it out with: "
            f"dot -Tsvg {full} -o out.svg)")
    small = attach_patterns(graph, view_of(graph, fallback, True, color, expand), attention)
    try:
        drawn = write_view(small, path, rankdir, time_budget, fallback)
    except subprocess.TimeoutExpired:
        raise TGraphError(f"layout of {path} still took over {time_budget:g} s at depth "
                          f"{fallback}; try --depth 1") from None
    drawn.note = note
    return drawn


def render_diff(a: Graph, b: Graph, path, rankdir: str = "TB",
                time_budget: float = 60.0, fold: bool = True) -> Rendered:
    """Draw graphs ``a`` and ``b`` as one diagram with their differences highlighted
    (identical blocks folded as in ``render`` unless ``fold`` is False)."""
    from tgraph.render.diff import diff_view

    try:
        return write_view(diff_view(a, b, fold), path, rankdir, time_budget)
    except subprocess.TimeoutExpired:
        raise TGraphError(f"laying out the diff took over {time_budget:g} s; diff smaller "
                          "models (fewer layers) or write .dot") from None


def write_view(view: View, path, rankdir: str = "TB", time_budget: float = 60.0,
               depth: int | None = None) -> Rendered:
    """Lay out and write one View; raises subprocess.TimeoutExpired past the budget."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise TGraphError(f"cannot render to {path.name!r}: use one of "
                          f"{', '.join('.' + f for f in FORMATS)}")
    if rankdir not in ("TB", "LR"):
        raise TGraphError(f"rankdir must be TB or LR, got {rankdir!r}")
    start = time.perf_counter()
    source = to_dot(view, rankdir).source
    if fmt != "dot":
        exe = shutil.which("dot")
        if exe is None:
            dot_path = path.with_suffix(".dot")
            _write_text(dot_path, source)
            raise TGraphError(f"Graphviz 'dot' is not installed, so no {fmt.upper()} was drawn; "
                              f"the DOT source is in {dot_path} (install graphviz, e.g. "
                              f"'apt install graphviz', then: dot -T{fmt} {dot_path} -o {path})")
        done = _run_dot(exe, fmt, source, time_budget)
        if done.returncode and b"trouble in init_rank" in done.stderr:
            # Graphviz 2.43's newrank fails on some clustered graphs (a gpt-tiny forward+
            # backward, heads split); its classic ranking lays the same graph out
            done = _run_dot(exe, fmt, to_dot(view, rankdir, newrank=False).source, time_budget)
        if done.returncode:
            raise TGraphError(f"dot failed on {path.name}: {done.stderr.decode(errors='replace')}")
        with atomic_write(path, "wb") as f:
            f.write(done.stdout)
    else:
        _write_text(path, source)
    return Rendered(path, len(view.items), len(view.edges), depth,
                    time.perf_counter() - start)


def _run_dot(exe: str, fmt: str, source: str, time_budget: float):
    # killed past the budget or on any exception (SIGTERM too); dies with us on SIGKILL
    return subprocess.run([exe, f"-T{fmt}"], input=source.encode(), capture_output=True,
                          timeout=time_budget, check=False, preexec_fn=_die_with_parent)


def _die_with_parent() -> None:
    """In the `dot` child: get SIGKILL when tgraph dies, even by SIGKILL (Linux only)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _write_text(path: Path, text: str) -> None:
    with atomic_write(path) as f:
        f.write(text)
