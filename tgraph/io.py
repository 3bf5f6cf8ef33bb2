"""Graph files (versioned JSON, no code, no pickle) and weights (.npz, allow_pickle=False).

Loading checks every field (tgraph.schema), then rebuilds the graph node by node through
the registry, checking attrs against each op's schema and types against its shape rule, so
a hand-edited file cannot smuggle in a wrong shape. Weights and feeds have their array
headers (names, shapes, dtypes, sizes) checked before any data is read.
Outputs are written to a temporary file and moved into place: never a half-written file;
inside ``all_or_nothing()`` several outputs appear together or not at all.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import math
import os
import secrets
import signal
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from tgraph.budget import check_bytes, nbytes
from tgraph.errors import FeedError, GraphFileError, TGraphError, UnknownOpError
from tgraph.ir import CONST, INPUT, INTERMEDIATE, PARAM, Graph, Node, Value
from tgraph.sanitize import clip
from tgraph.schema import check_graph_file
from tgraph.shapes import fmt_shape
from tgraph.types import TensorType

_UMASK = os.umask(0)
os.umask(_UMASK)

FORMAT = "tgraph-graph"
VERSION = 1


# (temp, final) pairs waiting for the end of an all_or_nothing() block; None outside one
_PENDING: contextvars.ContextVar[list | None] = contextvars.ContextVar("pending", default=None)


def temp_files_of(path: str | os.PathLike) -> list[Path]:
    """Temporary files atomic_write leaves beside ``path`` when killed (SIGKILL)."""
    path = Path(path)
    return sorted((path.parent or Path(".")).glob(f".{glob_escape(path.name)}.*.tmp"))


def remove_stale_temp_files(*paths) -> list[Path]:
    """Remove what a killed writer of ``paths`` left behind; returns what was removed."""
    removed = []
    for p in paths:
        for tmp in temp_files_of(p):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator:
    """Open a temp file beside ``path``; it replaces ``path`` only if the block succeeds
    (inside ``all_or_nothing()``: only if that whole block succeeds)."""
    path = Path(path)
    # named before it exists, so a signal (SIGTERM unwinds as SystemExit) that lands the
    # moment it is created still finds it to remove
    tmp = (path.parent or Path(".")) / f".{path.name}.{secrets.token_hex(8)}.tmp"
    try:
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as e:  # name the file the user asked for, not our temporary one
            raise TGraphError(f"cannot write {clip(str(path))}: {e.strerror}") from None
        with os.fdopen(fd, mode) as f:
            yield f
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give what open() would
        pending = _PENDING.get()
        if pending is None:
            os.replace(tmp, path)
        elif any(os.path.realpath(p) == os.path.realpath(path) for _, p in pending):
            raise TGraphError(f"{clip(str(path))} is named for two outputs; give each its "
                              "own file")
        else:
            pending.append((tmp, path))
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def all_or_nothing() -> Iterator[None]:
    """Files written by atomic_write in this block are moved into place together at its
    end, or all removed if it fails: ``build -o g.json --weights /bad/w.npz`` writes nothing."""
    pending: list = []
    token = _PENDING.set(pending)
    try:
        yield
    except BaseException:
        for tmp, _ in pending:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise
    finally:
        _PENDING.reset(token)
    for tmp, path in pending:
        os.replace(tmp, path)


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

    source = clip(source)[1:-1]
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise GraphFileError(f"{source}: not a tgraph graph file (no \"format\": \"{FORMAT}\")")
    if d.get("version") != VERSION:
        shown = d.get("version") if isinstance(d.get("version"), int) else "?"
        raise GraphFileError(f"{source}: graph file version {shown} is not "
                             f"supported (this tgraph reads version {VERSION})")
    check_graph_file(d, source)
    try:
        g = Graph(d.get("name", "graph"), d.get("meta") or {})
        by_name: dict[str, Value] = {}

        def leaf(e, kind, **kw) -> Value:
            if e["name"] in by_name:
                raise GraphFileError(f"{source}: value {clip(e['name'])} is defined twice")
            v = Value(e["name"], TensorType(e["dtype"], tuple(e["shape"])), kind, graph=g, **kw)
            by_name[v.name] = v
            g._names.add(v.name)
            return v

        g.inputs = [leaf(e, INPUT) for e in d["inputs"]]
        g.params = [leaf(e, PARAM, init=e.get("init")) for e in d["params"]]
        g.consts = [leaf(e, CONST, data=const_data(e, source)) for e in d["consts"]]
        for e in d["nodes"]:
            try:
                get_op(e["op"])
            except UnknownOpError as err:
                raise UnknownOpError(f"{source}: node {clip(e['name'])}: {err}") from None
            missing = [name for name in e["inputs"] if name not in by_name]
            if missing:
                raise GraphFileError(
                    f"{source}: {e['op']} node {clip(e['name'])} (scope "
                    f"{clip(e.get('scope') or '<root>')}) uses undefined value "
                    f"{clip(missing[0])} (a typo, or a cycle)")
            n = Node(e["name"], e["op"], [by_name[x] for x in e["inputs"]], [],
                     dict(e.get("attrs") or {}), e.get("scope", ""), dict(e.get("meta") or {}))
            g._names.add(n.name)
            n.outputs = [leaf(o, INTERMEDIATE, node=n) for o in e["outputs"]]
            g.nodes.append(n)
        for k, name in d["outputs"].items():
            if name not in by_name:
                raise GraphFileError(f"{source}: output {clip(k)} names undefined value "
                                     f"{clip(name)}")
            g.outputs[k] = by_name[name]
    except (KeyError, TypeError, ValueError) as e:
        raise GraphFileError(f"{source}: malformed graph file ({type(e).__name__}: "
                             f"{clip(e, 200)[1:-1]})") from None
    return g.validate()


def const_data(e: dict, source: str) -> np.ndarray:
    """A constant's array, which must have its declared shape."""
    try:
        data = np.asarray(e["data"], dtype=e["dtype"])
    except (ValueError, TypeError, OverflowError):
        data = None
    if data is None or data.shape != tuple(e["shape"]):
        raise GraphFileError(f"{source}: constant {clip(e['name'])}: data is not a "
                             f"{e['dtype']} array of shape {fmt_shape(e['shape'])}")
    return data


def copy_graph(graph: Graph) -> Graph:
    """An independent copy (the file format's round trip is exact), for passes that must
    not touch the caller's graph."""
    return graph_from_json(graph_to_json(graph), graph.name)


def save_graph(graph: Graph, path: str | os.PathLike) -> None:
    with atomic_write(path) as f:
        json.dump(graph_to_json(graph), f, indent=1)
        f.write("\n")


def load_graph(path: str | os.PathLike) -> Graph:
    shown = clip(str(path))
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as e:
        raise GraphFileError(f"cannot read graph file {shown}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise GraphFileError(f"{shown}: not UTF-8 text (byte {e.start})") from None
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise GraphFileError(f"{shown}: malformed JSON at line {e.lineno} column {e.colno}: "
                             f"{e.msg}") from None
    except RecursionError:
        raise GraphFileError(f"{shown}: JSON nested too deeply") from None
    except ValueError as e:  # an integer of thousands of digits
        raise GraphFileError(f"{shown}: malformed JSON ({clip(e, 100)[1:-1]})") from None
    return graph_from_json(d, str(path))


def save_weights(params: dict, path: str | os.PathLike) -> None:
    with _sigterm_held(), atomic_write(path, "wb") as f:
        np.savez(f, **{k: np.asarray(v) for k, v in params.items()})


@contextlib.contextmanager
def _sigterm_held() -> Iterator[None]:
    """A SIGTERM that arrives in the block is acted on when it ends. np.savez's zip writer
    cannot unwind from inside a member: its close then raises ValueError over the CLI's
    SystemExit (a traceback and exit 1 instead of 143, seen when `train` was stopped during
    a checkpoint). So the file is finished, then the signal's handler runs."""
    if threading.current_thread() is not threading.main_thread():
        yield  # handlers run, and can only be set, on the main thread
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if caught:
            signal.raise_signal(signal.SIGTERM)  # to the handler that was there before


def load_weights(path: str | os.PathLike, graph: Graph | None = None) -> dict[str, np.ndarray]:
    """Arrays by parameter name. Every member's header (name, dtype, shape) is checked
    first, against the graph when given (no unknown or missing names, exact shapes), and
    the total size against memory; only then is data read, never more than a header says."""
    shown = clip(str(path))
    try:
        with zipfile.ZipFile(path) as z:
            members = {}
            for info in z.infolist():
                name = info.filename[:-4] if info.filename.endswith(".npy") else None
                if not name:
                    raise GraphFileError(f"weights file {shown}: member {clip(info.filename)} "
                                         "is not a .npy array")
                with z.open(info) as f:
                    members[name] = (info, npy_header(f, f"{shown} member {clip(name)}"))
            if graph is not None:
                check_weights(graph, {k: _Shaped(h[0]) for k, (_, h) in members.items()},
                              f"weights file {shown}", exact=True)
            check_bytes(sum(nbytes(h[0], h[2].itemsize) for _, h in members.values()),
                        f"weights file {shown}")
            out = {}
            for name, (info, header) in members.items():
                with z.open(info) as f:
                    what = f"{shown} member {clip(name)}"
                    out[name] = read_npy(f, npy_header(f, what), what)
    except FileNotFoundError as e:
        raise GraphFileError(f"cannot read weights file {shown}: {e.strerror}") from None
    except zipfile.BadZipFile:
        raise GraphFileError(f"weights file {shown} is not a .npz archive"
                             + (" (it is a single .npy array; save a dict of named parameters"
                                " with numpy.savez)" if _is_npy(path) else "")) from None
    except (OSError, EOFError, ValueError, RuntimeError, NotImplementedError) as e:
        raise GraphFileError(f"cannot read weights file {shown}: "
                             f"{clip(e, 100)[1:-1]}") from None
    return out


class _Shaped:  # a header's shape, standing in for the array check_weights looks at
    def __init__(self, shape):
        self.shape = shape


def _is_npy(path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(6) == b"\x93NUMPY"
    except OSError:
        return False


def npy_header(f, what: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, Fortran order, dtype) from a .npy header; refuses object arrays (pickles)."""
    from numpy.lib import format as npy

    try:
        read = {(1, 0): npy.read_array_header_1_0,
                (2, 0): npy.read_array_header_2_0}.get(npy.read_magic(f))
        if read is None:
            raise ValueError("unsupported .npy format version")
        shape, fortran, dtype = read(f)
    except (ValueError, EOFError, SyntaxError, TypeError) as e:
        raise GraphFileError(f"{what}: not a valid .npy array ({clip(e, 80)[1:-1]})") from None
    if dtype.hasobject:
        raise GraphFileError(f"{what} holds Python objects (a pickle), which tgraph never loads")
    if dtype.kind not in "fiub" or dtype.subdtype is not None or dtype.names:
        raise GraphFileError(f"{what} has dtype {clip(dtype.str)}, not a float, int or bool")
    return tuple(shape), bool(fortran), dtype


def read_npy(f, header, what: str) -> np.ndarray:
    """Exactly the bytes the header promised, read after the size check; nothing more."""
    shape, fortran, dtype = header
    size = math.prod(shape) * dtype.itemsize
    data = f.read(size)
    if len(data) != size:
        raise GraphFileError(f"{what}: file ends before its {fmt_shape(shape)} array")
    arr = np.frombuffer(data, dtype=dtype)
    return (arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)).copy()


def load_array(path: str | os.PathLike, what: str) -> np.ndarray:
    """One .npy file (a feed), header checked and size budgeted before reading."""
    shown = clip(str(path))
    try:
        with open(path, "rb") as f:
            header = npy_header(f, f"{what} {shown}")
            check_bytes(nbytes(header[0], header[2].itemsize),
                        f"{what} {shown} ({fmt_shape(header[0])})")
            return read_npy(f, header, f"{what} {shown}")
    except OSError as e:
        raise GraphFileError(f"cannot read {what} {shown}: {e.strerror}") from None


def check_weights(graph: Graph, params: dict, source: str = "weights",
                  exact: bool = False) -> None:
    """Every parameter of ``graph`` is in ``params`` with its shape (one FeedError if not);
    ``exact``: and nothing else is (a weights file for another graph, a misspelt name)."""
    if exact:
        names = {p.name for p in graph.params}
        extra = sorted(k for k in params if k not in names)
        if extra:
            raise FeedError(f"{source} holds {clip(extra[0])}, which graph "
                            f"{clip(graph.name)} has no parameter named")
    for p in graph.params:
        if p.name not in params:
            raise FeedError(f"{source} is missing parameter {clip(p.name)} ({p.type})")
        shape = tuple(params[p.name].shape)
        if shape != tuple(p.shape):
            raise FeedError(f"{source}: parameter {clip(p.name)} has shape {fmt_shape(shape)}, "
                            f"expected {fmt_shape(p.shape)}")
