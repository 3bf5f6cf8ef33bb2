"""A fused node's body -> one Numba loop over its output, split over rows across cores.

Like PyTensor's Numba backend (pytensor/link/numba/dispatch/elemwise.py), the body's scalar
formulas are written out as the source of one jitted function, which is saved as a file
so Numba's own cache (``cache=True``) keeps its machine code beside it. The file's name is
the hash of the body's canonical form (``canonical``): a second process, or a second
model with the same chain, compiles nothing.

The loop runs over the output seen as (rows, last dim). Each input is read the cheapest way
its array allows (``input_kind``): a contiguous tensor by [row, column], a bias by [column],
a per-row statistic by [row], anything else through a broadcast view by its full index; a
kernel is compiled per body and way of reading. With contiguous reads, ``error_model=
'numpy'`` (no exception branch on a division) and, for float32, vecmath's exp/erfc/tanh in
place of libm calls, LLVM vectorizes the inner loop (an exact-GELU gradient: 29 -> 7 ms per
million elements on one core). The function is compiled as a C entry point over a row range
(entry.py), so any thread runs it without the GIL; a large array's rows are split over one
thread per core, a small one runs on the calling thread.
Numba's own ``parallel=True``/``prange`` was the first version: on this 2-core machine
shared with other jobs, its worker threads and OpenBLAS's spin against each other between
kernels (a tiny GPT's forward took 230 ms in fused kernels instead of 1 ms), it cannot
run a small array serially, and it compiles 2-3x slower; the split here keeps the threads
only where the work pays for them.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import json
import math
import os
import sys
import threading
from pathlib import Path

import numpy as np

from tgraph.codegen.entry import ENTRY_SIGNATURE, IMPORTS, Entry, Param, entry_source
from tgraph.errors import BackendError
from tgraph.parallel import CompiledJob, data_address, split

_LOADED: dict[str, object] = {}
#: call layouts a fused kernel remembers
CALLS_MAX = 64


@functools.cache
def _version(module: str) -> str:
    """A module's content hash: generated kernels key on their generator and math."""
    return hashlib.sha256((Path(__file__).parent / module).read_bytes()).hexdigest()[:12]


#: generated kernels inline their math module: a change there must not reuse an old kernel
_VECMATH_VERSION = _version("vecmath.py")
#: how a kernel computes, by its dtypes (``math_mode``): the module its formulas' ``math``
#: names and the version that keys its cache
MATH_MODULES = {"f32": ("tgraph.codegen.vecmath32", _version("vecmath32.py")),
                "vec": ("tgraph.codegen.vecmath", _VECMATH_VERSION),
                "libm": ("tgraph.codegen.libm", _version("libm.py"))}
_LOCK = threading.Lock()


def cache_dir() -> Path:
    """Where generated kernels live: $TGRAPH_CACHE_DIR, else ~/.cache/tgraph/kernels."""
    root = os.environ.get("TGRAPH_CACHE_DIR") or Path.home() / ".cache" / "tgraph"
    return Path(root) / "kernels"


#: how a kernel reads one input, chosen per call from the array: a C-contiguous array of the
#: output's shape by [row, column]; a vector along the last axis (a bias) by [column]; one
#: value per row (a LayerNorm statistic) by [row]; a single value by [0]; anything else
#: through a broadcast view of the output's shape, by its full index. WRITTEN is a FULL input
#: that also takes the (single) output: written as itself, since writing through a second
#: name for the same memory makes LLVM's overlap check choose its scalar loop (4x slower).
FULL, COLUMN, ROW, SCALAR, STRIDED, WRITTEN = "f", "c", "r", "s", "a", "w"


def input_kind(a: np.ndarray, shape: tuple[int, ...]) -> str:
    padded = (1,) * (len(shape) - a.ndim) + a.shape
    if a.size == 1:
        return SCALAR
    if padded == shape and a.flags.c_contiguous:
        return FULL
    if shape and all(d == 1 for d in padded[:-1]) and padded[-1] == shape[-1]:
        return COLUMN
    if shape and padded[-1] == 1 and padded[:-1] == shape[:-1] and a.flags.c_contiguous:
        return ROW
    return STRIDED


def static_kind(in_shape: tuple, shape: tuple) -> str:
    """``input_kind`` predicted from (possibly symbolic) shapes, for a contiguous array."""
    padded = (1,) * (len(shape) - len(in_shape)) + in_shape
    if all(d == 1 for d in padded):
        return SCALAR
    if padded == shape:
        return FULL
    if shape and all(d == 1 for d in padded[:-1]) and padded[-1] == shape[-1]:
        return COLUMN
    if shape and padded[-1] == 1 and padded[:-1] == shape[:-1]:
        return ROW
    return STRIDED


def math_mode(in_dtypes, out_dtypes) -> str:
    """"f32": float32 (and bool) values only, computed in float32 (vecmath32, 8 lanes);
    "vec": no float64 value, computed in float64 lanes (vecmath, float32-accurate);
    "libm": float64, with libm's functions."""
    ins, outs = [np.dtype(d) for d in in_dtypes], [np.dtype(d) for d in out_dtypes]
    if all(d == np.float32 for d in outs) and all(d in (np.float32, np.bool_) for d in ins):
        return "f32"
    return "libm" if np.dtype(np.float64) in (*ins, *outs) else "vec"


def canonical(attrs: dict, kinds: str, ndim: int, mode: str, dtypes: list[str]) -> str:
    """The text a kernel is keyed by: the body (ops, references, attrs, inlined constants),
    its outputs, how each input is read, the rank (for strided reads), the math used and
    the dtypes (inputs', then outputs')."""
    return json.dumps({"body": attrs["body"], "outputs": attrs["outputs"], "kinds": kinds,
                       "ndim": ndim if STRIDED in kinds else 2, "dtypes": dtypes,
                       "math": MATH_MODULES[mode][1], "generator": _version("numba_cpu.py")},
                      sort_keys=True, separators=(",", ":"))


class _Float32Literals(ast.NodeTransformer):
    """Numbers in a formula as float32 constants, so float32 values stay float32 (a float64
    literal would widen the whole loop to 4 lanes); a power's exponent stays as written."""

    def visit_Constant(self, node):
        if isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return _f32(node)
        return node

    def visit_BinOp(self, node):
        node.left = self.visit(node.left)
        if not isinstance(node.op, ast.Pow):
            node.right = self.visit(node.right)
        return node

    def visit_Subscript(self, node):  # an index (in2[0]) stays an integer
        node.value = self.visit(node.value)
        return node

    def visit_Call(self, node):
        if isinstance(node.func, ast.Name) and node.func.id == "float":  # _literal's inf, nan
            return _f32(node)
        return self.generic_visit(node)


def _f32(node: ast.expr) -> ast.Call:
    return ast.Call(ast.Attribute(ast.Name("np", ast.Load()), "float32", ast.Load()), [node], [])


def float32_formula(expr: str) -> str:
    return ast.unparse(_Float32Literals().visit(ast.parse(expr, mode="eval")))


def source(attrs: dict, kinds: str, ndim: int, mode: str, dtypes: list[str]) -> str:
    """Python source of the module whose ``entry`` (entry.py) is ``kernel_source``'s loop,
    compiled where the module runs."""
    return _module(attrs, kinds, ndim, mode, dtypes)[0]


def _module(attrs: dict, kinds: str, ndim: int, mode: str, dtypes: list[str]
            ) -> tuple[str, list[Param]]:
    """``source``'s text and the parameters its entry packs."""
    reduces = any(e["op"] in ("sum", "mean") for e in attrs["body"])
    # reassoc vectorizes a row sum; elsewhere it could reorder vecmath32's exact steps
    flags = ('{"contract", "nsz", "arcp"' + (', "reassoc"}' if reduces else "}")
             if mode != "libm" else '{"contract"}')
    return entry_module(kernel_source(attrs, kinds, ndim, mode, dtypes), None,
                        f"import numpy as np\nimport {MATH_MODULES[mode][0]} as math\n", flags)


def entry_module(body: str, dtype, header: str, flags: str | None = None, imports: str = ""
                 ) -> tuple[str, list[Param]]:
    """The text of the module whose ``entry`` is the kernel ``body`` (entry.py) compiled as
    a C entry point with these fastmath ``flags``, after ``header`` and then ``imports`` (of
    the compiled functions it calls), and the parameters the entry packs: the one way every
    generated loop (fused chains, row kernels, attention, AdamW) is written."""
    fastmath = f", fastmath={flags}" if flags else ""
    text, params = entry_source(body, dtype, f"@cfunc({ENTRY_SIGNATURE}, cache=True, "
                                             f"error_model='numpy'{fastmath})")
    return f"{header}{IMPORTS}{imports}\n\n{text}", params


def load_entry(module: tuple[str, list[Param]], key: str | None = None) -> Entry:
    """The entry of ``entry_module``'s module, cached by ``key`` (by default its text)."""
    text, params = module
    return Entry(load_source(text if key is None else key, lambda: text).entry, params)


def kernel_source(attrs: dict, kinds: str, ndim: int, mode: str, dtypes: list[str]) -> str:
    """``kernel(r0, r1, n, in0, .., out0, ..)``, its parameters typed for entry.py, over
    rows r0..r1 of the output seen as (rows, n); inputs read as ``kinds`` says, strided ones
    of rank ``ndim``; ``dtypes``: the inputs', then the outputs'."""
    from tgraph.ops.registry import get_op

    outs, n_inputs = attrs["outputs"], len(kinds)
    strided = kinds.find(STRIDED)
    lead = [f"i{d}" for d in range(ndim - 1)]
    index = {FULL: "[r, j]", WRITTEN: "[r, j]", COLUMN: "[j]", ROW: "[r]", SCALAR: "[0]",
             STRIDED: f"[{', '.join([*lead, 'j'])}]"}
    written = kinds.find(WRITTEN)
    out_names = [f"in{written}" if written >= 0 else f"out{k}" for k in range(len(outs))]
    reduced = {k for k, e in enumerate(attrs["body"]) if e["op"] in ("sum", "mean")}
    ranks = {FULL: "2d", WRITTEN: "2d", COLUMN: "1d", ROW: "1d", SCALAR: "1d",
             STRIDED: f"{ndim}d strided"}
    args = [f'in{k}: "{dtypes[k]} {ranks[kind]}"' for k, kind in enumerate(kinds)]
    args += [f'out{k}: "{dtypes[n_inputs + k]} {"1d" if ref - n_inputs in reduced else "2d"}"'
             for k, ref in enumerate(outs) if written < 0]
    lines = [f"def kernel(r0, r1, n: int, {', '.join(args)}):"]
    if strided >= 0:
        lines.append(f"    {''.join(f'n{d}, ' for d in range(ndim))}= in{strided}.shape")
    lines.append("    for r in range(r0, r1):")
    if strided >= 0:  # leading indices of a strided read, from the row number
        rest = "r"
        for d in range(ndim - 2, 0, -1):
            lines += [f"        i{d} = {rest} % n{d}", f"        q{d} = {rest} // n{d}"]
            rest = f"q{d}"
        lines.append(f"        i0 = {rest}")
    reductions = {}  # body index -> accumulator; row sums in float64
    body_lines, names = [], [f"in{k}{index[kind]}" for k, kind in enumerate(kinds)]
    for k, entry in enumerate(attrs["body"]):
        refs = [_literal(a) if isinstance(a, dict) else names[a] for a in entry["args"]]
        if entry["op"] in ("sum", "mean"):
            reductions[k] = f"acc{k}"
            body_lines.append(f"            acc{k} += {refs[0]}")
        else:
            expr = get_op(entry["op"]).scalar(refs, **entry.get("attrs", {}))
            body_lines.append(f"            v{k} = "
                              f"{float32_formula(expr) if mode == 'f32' else expr}")
        names.append(f"v{k}")
    lines += [f"        {acc} = 0.0" for acc in reductions.values()]
    lines.append("        for j in range(n):")
    lines += body_lines
    for k, ref in enumerate(outs):
        if ref - n_inputs not in reductions:
            lines.append(f"            {out_names[k]}[r, j] = {names[ref]}")
    for k, ref in enumerate(outs):
        if ref - n_inputs in reductions:
            mean = attrs["body"][ref - n_inputs]["op"] == "mean"
            lines.append(f"        out{k}[r] = {reductions[ref - n_inputs]}"
                         f"{' / n' if mean else ''}")
    return "\n".join(lines) + "\n"


def _literal(a: dict) -> str:
    """An inlined constant as source text: only numbers reach the generated code."""
    value = a["value"]
    if isinstance(value, bool):
        return "True" if value else "False"
    if not isinstance(value, (int, float)) or (isinstance(value, float) and not math.isfinite(value)):
        return f"float({str(value)!r})"  # inf, nan: float('inf') is a number, not a name
    return repr(value)


def load(attrs: dict, kinds: str, ndim: int, mode: str, dtypes: list[str]) -> Entry:
    """The compiled loop for a body read as ``kinds``."""
    return load_entry(_module(attrs, kinds, ndim, mode, dtypes),
                      canonical(attrs, kinds, ndim, mode, dtypes))


def source_path(key: str) -> Path:
    """Where the module of the kernel keyed by ``key`` is written (and Numba's cache)."""
    return cache_dir() / f"fused_{hashlib.sha256(key.encode()).hexdigest()[:24]}.py"


def is_cached(key: str) -> bool:
    """Whether the module keyed by ``key`` is loaded here or in the disk cache already."""
    return key in _LOADED or source_path(key).exists()


def load_source(key: str, make_source) -> object:
    """The module ``make_source()`` writes, keyed by ``key``: from this process's memo,
    else the file cache, else written there now (atomically, so concurrent processes
    agree)."""
    with _LOCK:
        if key in _LOADED:
            return _LOADED[key]
        try:
            import numba  # noqa: F401
        except ImportError as e:
            raise BackendError("compiled kernels need numba (pip install numba)") from e
        path = source_path(key)
        digest = path.stem.removeprefix("fused_")
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(make_source())
            os.replace(tmp, path)
        name = f"tgraph_fused_{digest}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # Numba's cache finds the function's module by name
        spec.loader.exec_module(module)
        _LOADED[key] = module
        return module


class FusedKernel:
    """A fused node's kernel on NumPy: inputs read in place, fresh outputs, one compiled loop
    per way of reading the inputs (usually one per node)."""

    def __init__(self, node):
        self.attrs = node.attrs
        self.in_dtypes = [np.dtype(v.dtype) for v in node.inputs]
        self.dtypes = [np.dtype(v.dtype) for v in node.outputs]
        self.names = [d.name for d in (*self.in_dtypes, *self.dtypes)]
        self.reduced = [node.attrs["body"][r - len(node.inputs)]["op"] in ("sum", "mean")
                        for r in node.attrs["outputs"]]
        self.ndim = max(2, node.outputs[0].type.rank)
        self.mode = math_mode([v.dtype for v in node.inputs], self.dtypes)
        self.kernels: dict[str, object] = {}
        self._calls: dict[tuple, tuple] = {}  # a call's layout -> its job, to reuse
        self.node = node

    def static_kinds(self) -> str:
        """How the node's types say its inputs will be read (the loop preload compiles)."""
        shape = tuple(self.node.outputs[0].shape)
        return "".join(static_kind(tuple(v.shape), shape) for v in self.node.inputs)

    def key(self) -> str:
        """The canonical form of that loop: its module's name and cache key."""
        return canonical(self.attrs, self.static_kinds(), self.ndim, self.mode, self.names)

    def preload(self) -> None:
        """Compile (or load from the disk cache) the loop for the way the node's types say
        its inputs will be read: the first run then pays nothing."""
        self.kernel_for(self.static_kinds())

    def kernel_for(self, kinds: str) -> Entry:
        if kinds not in self.kernels:
            self.kernels[kinds] = load(self.attrs, kinds, self.ndim, self.mode, self.names)
        return self.kernels[kinds]

    def __call__(self, *arrays, into=None):
        """The outputs; with ``into`` (a C-contiguous array of the single full output's
        shape and dtype) the output is written there. ``into`` may be one of ``arrays``
        that nothing reads after this call: each element is read before it is written, in
        the same iteration.

        A call in a layout seen before (the arrays' shapes, strides and dtypes, ``into``'s
        and which input it is) reuses that call's job, its arrays' addresses written in:
        a training step's loops meet the same layouts every step, where working the call
        out again took ~50 µs of Python a loop there."""
        key = (tuple([(a.shape, a.strides, a.dtype) for a in arrays]),
               None if into is None else (into.shape, into.strides),
               next((k for k, a in enumerate(arrays) if a is into), -1))
        known = self._calls.get(key)
        if known is None:
            return self._first_call(arrays, into, key)
        entry, template, slots, fresh, shape, rows = known
        outs = [np.empty(s, dt) for s, dt in fresh] if fresh else [into]
        values = (*arrays, *outs)
        args = template.copy()
        for slot, k in slots:
            args[slot] = data_address(values[k])
        split(CompiledJob(entry.address, args, keep=values), rows, math.prod(shape),
              key=(entry.address, shape))
        return outs[0] if len(outs) == 1 else tuple(outs)

    def _first_call(self, arrays, into, key):
        """``__call__`` worked out; its job remembered where each array it packs is one the
        call is given (or makes), with its own address: no cast and no copy."""
        given = arrays
        arrays = [a if a.dtype == dt else a.astype(dt) for a, dt in zip(arrays, self.in_dtypes)]
        shape = np.broadcast_shapes(*(a.shape for a in arrays))
        kinds = [input_kind(a, shape) for a in arrays]
        single = len(self.dtypes) == 1 and not self.reduced[0]
        written = next((k for k, a in enumerate(arrays) if a is into and kinds[k] == FULL
                        and single), None)
        if written is not None:
            outs, kinds[written] = [into], WRITTEN
        elif into is not None and single and into.shape == shape:
            outs = [into]
        else:
            outs = [np.empty(shape[:-1] + (1,) if red else shape, dt)
                    for dt, red in zip(self.dtypes, self.reduced)]
        if not math.prod(shape):
            return outs[0] if len(outs) == 1 else tuple(outs)
        loop = (1,) * (self.ndim - len(shape)) + shape
        n, rows = loop[-1], math.prod(loop[:-1])
        entry = self.kernel_for("".join(kinds))
        args = [_as_read(a, kind, loop) for a, kind in zip(arrays, kinds)]
        if written is None:
            args += [o.reshape(rows) if red else o.reshape(rows, n)
                     for o, red in zip(outs, self.reduced)]
        job = entry.job(n, *args)
        packed = [*given, *outs]
        if all(data_address(v) == data_address(w) for v, w in zip(args, packed)) and all(
                a is b for a, b in zip(arrays, given)):
            template, slots = entry.pack((n, *args))
            if len(self._calls) >= CALLS_MAX:
                self._calls.clear()
            self._calls[key] = (entry, template, [(at, k - 1) for at, k in slots],
                                None if outs[0] is into else [(o.shape, o.dtype) for o in outs],
                                shape, rows)
        split(job, rows, math.prod(shape), key=(entry.address, shape))
        return outs[0] if len(outs) == 1 else tuple(outs)


def _as_read(a: np.ndarray, kind: str, loop: tuple[int, ...]) -> np.ndarray:
    if kind in (FULL, WRITTEN):
        return a.reshape(-1, loop[-1])
    if kind == STRIDED:  # entry.py reads non-negative strides only
        return np.broadcast_to(a if min(a.strides, default=0) >= 0 else a.copy(), loop)
    return np.ascontiguousarray(a).reshape(-1)  # COLUMN, ROW, SCALAR: small, or already flat
