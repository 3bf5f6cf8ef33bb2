"""Graph files (versioned JSON, no code, no pickle) and weights (.npz, allow_pickle=False).

Loading rebuilds the graph node by node through the registry and re-checks every node's
types against its op's shape rule, so a hand-edited file cannot smuggle in a wrong shape.
Outputs are written to a temporary file and moved into place: never a half-written file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from tgraph.errors import FeedError, GraphFileError, TGraphError, UnknownOpError
from tgraph.ir import CONST, INPUT, INTERMEDIATE, PARAM, Graph, Node, Value
from tgraph.shapes import fmt_shape
from tgraph.types import TensorType

_UMASK = os.umask(0)
os.umask(_UMASK)

FORMAT = "tgraph-graph"
VERSION = 1


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator:
    """Open a temp file beside ``path``; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:  # name the file the user asked for, not our temporary one
        raise TGraphError(f"cannot write {str(path)!r}: {e.strerror}") from None
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give what open() would
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def graph_to_json(graph: Graph) -> dict:
    def val(v: Value) -> dict:
        return {"name": v.name, **v.type.to_json()}

    return {
        "format": FORMAT,
        "version": VERSION,
        "name": graph.name,
        "meta": graph.meta,
        "inputs": [val(v) for v in graph.inputs],
        "params": [{**val(v), "init": v.init} for v in graph.params],
        "consts": [{**val(v), "data": v.data.tolist()} for v in graph.consts],
        "nodes": [{"name": n.name, "op": n.op, "scope": n.scope,
                   "inputs": [v.name for v in n.inputs], "attrs": n.attrs,
                   "outputs": [val(v) for v in n.outputs],
                   **({"meta": n.meta} if n.meta else {})} for n in graph.nodes],
        "outputs": {k: v.name for k, v in graph.outputs.items()},
    }


def graph_from_json(d: dict, source: str = "graph") -> Graph:
    from tgraph.ops.registry import get_op

    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise GraphFileError(f"{source}: not a tgraph graph file (no \"format\": \"{FORMAT}\")")
    if d.get("version") != VERSION:
        raise GraphFileError(f"{source}: graph file version {d.get('version')!r} is not "
                             f"supported (this tgraph reads version {VERSION})")
    try:
        g = Graph(d.get("name", "graph"), d.get("meta") or {})
        by_name: dict[str, Value] = {}

        def leaf(e, kind, **kw) -> Value:
            if e["name"] in by_name:
                raise GraphFileError(f"{source}: value {e['name']!r} is defined twice")
            v = Value(e["name"], TensorType(e["dtype"], tuple(e["shape"])), kind, graph=g, **kw)
            by_name[v.name] = v
            g._names.add(v.name)
            return v

        g.inputs = [leaf(e, INPUT) for e in d["inputs"]]
        g.params = [leaf(e, PARAM, init=e.get("init")) for e in d["params"]]
        g.consts = [leaf(e, CONST, data=np.asarray(e["data"], dtype=e["dtype"]))
                    for e in d["consts"]]
        for e in d["nodes"]:
            try:
                get_op(e["op"])
            except UnknownOpError as err:
                raise UnknownOpError(f"{source}: node {e['name']!r}: {err}") from None
            missing = [name for name in e["inputs"] if name not in by_name]
            if missing:
                raise GraphFileError(
                    f"{source}: {e['op']} node {e['name']!r} (scope {e.get('scope') or '<root>'})"
                    f" uses undefined value {missing[0]!r} (a typo, or a cycle)")
            n = Node(e["name"], e["op"], [by_name[x] for x in e["inputs"]], [],
                     dict(e.get("attrs") or {}), e.get("scope", ""), dict(e.get("meta") or {}))
            g._names.add(n.name)
            n.outputs = [leaf(o, INTERMEDIATE, node=n) for o in e["outputs"]]
            g.nodes.append(n)
        for k, name in d["outputs"].items():
            if name not in by_name:
                raise GraphFileError(f"{source}: output {k!r} names undefined value {name!r}")
            g.outputs[k] = by_name[name]
    except (KeyError, TypeError, ValueError) as e:
        raise GraphFileError(f"{source}: malformed graph file ({type(e).__name__}: {e})") from None
    return g.validate()


def copy_graph(graph: Graph) -> Graph:
    """An independent copy (the file format's round trip is exact), for passes that must
    not touch the caller's graph."""
    return graph_from_json(graph_to_json(graph), graph.name)


def save_graph(graph: Graph, path: str | os.PathLike) -> None:
    with atomic_write(path) as f:
        json.dump(graph_to_json(graph), f, indent=1)
        f.write("\n")


def load_graph(path: str | os.PathLike) -> Graph:
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise GraphFileError(f"cannot read graph file {str(path)!r}: {e.strerror}") from None
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise GraphFileError(f"{path}: malformed JSON at line {e.lineno} column {e.colno}: "
                             f"{e.msg}") from None
    return graph_from_json(d, str(path))


def save_weights(params: dict, path: str | os.PathLike) -> None:
    with atomic_write(path, "wb") as f:
        np.savez(f, **{k: np.asarray(v) for k, v in params.items()})


def load_weights(path: str | os.PathLike, graph: Graph | None = None) -> dict[str, np.ndarray]:
    """Arrays by parameter name; with a graph, checks every parameter is present and fits."""
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
    except ValueError as e:
        raise GraphFileError(f"weights file {str(path)!r} holds pickled objects, which tgraph "
                             f"never loads ({e})") from None
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise GraphFileError(f"cannot read weights file {str(path)!r}: {e}") from None
    if graph is not None:
        check_weights(graph, out, str(path))
    return out


def check_weights(graph: Graph, params: dict, source: str = "weights") -> None:
    """Every parameter of ``graph`` is in ``params`` with its shape (one FeedError if not)."""
    for p in graph.params:
        if p.name not in params:
            raise FeedError(f"{source} is missing parameter {p.name!r} ({p.type})")
        shape = tuple(params[p.name].shape)
        if shape != tuple(p.shape):
            raise FeedError(f"{source}: parameter {p.name!r} has shape {fmt_shape(shape)}, "
                            f"expected {fmt_shape(p.shape)}")
