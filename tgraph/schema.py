"""Every field of a parsed graph file checked before anything uses it.

``check_graph_file`` walks the JSON and raises one GraphFileError naming the field
(``nodes[3].scope``), what it must be and (clipped) what it is: names are non-empty
strings without control characters or lone surrogates, shapes are lists of dims, init
specs are known distributions with finite scales, and the ``meta`` keys tgraph reads
(``dims``, ``int_ranges``, ``chars``, ``config``, ``grad``) have their types. Attrs are
checked per op by the registry's schema (tgraph.ops.attrs) when the nodes are rebuilt.
"""

from __future__ import annotations

import re

from tgraph.errors import GraphFileError
from tgraph.params import init_problem
from tgraph.sanitize import clip
from tgraph.shapes import _DTYPES, norm_dim

NAME_MAX = 1024  # characters; a zip member name (weights) holds at most 64 KiB
MAX_RANK = 32  # NumPy's limit is 64
MAX_SCOPE_DEPTH = 64
DIM_MAX = 1 << 48  # any bigger dim cannot be allocated anyway; keeps arithmetic exact
_BAD_CHARS = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


class _Checker:
    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, must: str, got) -> None:
        shown = clip(got) if isinstance(got, str) else type(got).__name__
        raise GraphFileError(f"{self.source}: {where} must be {must}, got {shown}")

    def obj(self, x, where: str, required=(), optional=()) -> dict:
        if not isinstance(x, dict):
            self.fail(where, "an object", x)
        for k in required:
            if k not in x:
                raise GraphFileError(f"{self.source}: {where} has no {k!r}")
        return x

    def lst(self, x, where: str) -> list:
        if not isinstance(x, list):
            self.fail(where, "a list", x)
        return x

    def name(self, x, where: str) -> str:
        if not isinstance(x, str) or not x:
            self.fail(where, "a non-empty string", x)
        if len(x) > NAME_MAX:
            self.fail(where, f"at most {NAME_MAX} characters long", f"{len(x)} characters")
        if _BAD_CHARS.search(x):
            self.fail(where, "free of control characters and lone surrogates", x)
        return x

    def text(self, x, where: str, limit: int = NAME_MAX) -> str:
        if not isinstance(x, str):
            self.fail(where, "a string", x)
        if len(x) > limit:
            self.fail(where, f"at most {limit} characters long", f"{len(x)} characters")
        if _BAD_CHARS.search(x):
            self.fail(where, "free of control characters and lone surrogates", x)
        return x

    def count(self, x, where: str, low: int = 1) -> int:
        if isinstance(x, bool) or not isinstance(x, int) or not low <= x <= DIM_MAX:
            self.fail(where, f"an integer from {low} to 2^48", x if isinstance(x, str) else
                      (f"{x}" if isinstance(x, int) and abs(x) < 10**30 else x))
        return x

    def typed(self, e, where: str, concrete: bool = False) -> None:
        """A name, dtype and shape; ``concrete``: int dims only (weights, constants)."""
        self.obj(e, where, ("name", "dtype", "shape"))
        self.name(e["name"], f"{where}.name")
        if e["dtype"] not in _DTYPES:
            self.fail(f"{where}.dtype", "one of " + "|".join(_DTYPES), e["dtype"])
        shape = self.lst(e["shape"], f"{where}.shape")
        if len(shape) > MAX_RANK:
            self.fail(f"{where}.shape", f"of rank ≤ {MAX_RANK}", f"rank {len(shape)}")
        for i, d in enumerate(shape):
            if isinstance(d, str) and len(d) <= 200 and not concrete:
                try:
                    norm_dim(d)
                    continue
                except ValueError:
                    pass
            if isinstance(d, str) or isinstance(d, bool) or not isinstance(d, int):
                self.fail(f"{where}.shape[{i}]", "an integer ≥ 0" if concrete else
                          "an integer ≥ 0 or a symbol (B, B*T)", d)
            self.count(d, f"{where}.shape[{i}]", 0)

    def scope(self, x, where: str) -> None:
        self.text(x, where)
        if x.count("/") >= MAX_SCOPE_DEPTH:
            self.fail(where, f"at most {MAX_SCOPE_DEPTH} levels deep",
                      f"{x.count('/') + 1} levels")

    def meta(self, meta, where: str) -> None:
        self.obj(meta, where)
        for key in ("dims", "int_ranges"):
            if key in meta:
                for k, v in self.obj(meta[key], f"{where}.{key}").items():
                    self.count(v, f"{where}.{key}.{clip(k, 40)}")
        if "text" in meta:  # what tgraph generate reads: the codec and the context length
            text = self.obj(meta["text"], f"{where}.text", ("codec", "context"))
            if text["codec"] not in ("chars", "bytes"):
                self.fail(f"{where}.text.codec", "chars or bytes", text["codec"])
            self.count(text["context"], f"{where}.text.context")
            if text["codec"] == "chars":
                chars = text.get("chars")
                if not isinstance(chars, str) or not chars or len(set(chars)) != len(chars):
                    self.fail(f"{where}.text.chars", "a string of distinct characters", chars)
                if len(chars) > 1 << 20 or re.search("[\ud800-\udfff]", chars):
                    self.fail(f"{where}.text.chars", "at most 2^20 characters, no surrogates",
                              f"{len(chars)} characters")
        if "config" in meta:
            cfg = self.obj(meta["config"], f"{where}.config")
            for key in ("max_len", "n_heads", "vocab", "d_model"):
                if key in cfg:
                    self.count(cfg[key], f"{where}.config.{key}")
        if "grad" in meta:
            grad = self.obj(meta["grad"], f"{where}.grad", ("loss", "wrt"))
            self.text(grad["loss"], f"{where}.grad.loss")
            for k, v in self.obj(grad["wrt"], f"{where}.grad.wrt").items():
                self.text(v, f"{where}.grad.wrt.{clip(k, 40)}")
        for key in ("model", "preset"):
            if meta.get(key) is not None:
                self.text(meta[key], f"{where}.{key}")


def check_graph_file(d: dict, source: str) -> None:
    """Raise one GraphFileError for the first field that does not fit (see module doc)."""
    c = _Checker(source)
    c.obj(d, "the file", ("inputs", "params", "consts", "nodes", "outputs"))
    c.text(d.get("name", "graph"), "name")
    c.meta(d.get("meta") or {}, "meta")
    for i, e in enumerate(c.lst(d["inputs"], "inputs")):
        c.typed(e, f"inputs[{i}]")
    for i, e in enumerate(c.lst(d["params"], "params")):
        c.typed(e, f"params[{i}]", concrete=True)
        if e.get("init") is not None:
            problem = init_problem(e["init"])
            if problem:
                c.fail(f"params[{i}].init", problem, e["init"])
    for i, e in enumerate(c.lst(d["consts"], "consts")):
        c.typed(e, f"consts[{i}]", concrete=True)
        if "data" not in e:
            raise GraphFileError(f"{source}: consts[{i}] has no 'data'")
    for i, e in enumerate(c.lst(d["nodes"], "nodes")):
        where = f"nodes[{i}]"
        c.obj(e, where, ("name", "op", "inputs", "outputs"))
        c.name(e["name"], f"{where}.name")
        c.name(e["op"], f"{where}.op")
        c.scope(e.get("scope", ""), f"{where}.scope")
        for j, x in enumerate(c.lst(e["inputs"], f"{where}.inputs")):
            c.name(x, f"{where}.inputs[{j}]")
        outs = c.lst(e["outputs"], f"{where}.outputs")
        if not outs:
            c.fail(f"{where}.outputs", "a non-empty list", "[]")
        for j, o in enumerate(outs):
            c.typed(o, f"{where}.outputs[{j}]")
        if e.get("attrs") is not None:
            c.obj(e["attrs"], f"{where}.attrs")
        if e.get("meta") is not None:
            c.obj(e["meta"], f"{where}.meta")
    for k, v in c.obj(d["outputs"], "outputs").items():
        c.name(k, "an output name")
        c.name(v, f"outputs.{clip(k, 40)}")
