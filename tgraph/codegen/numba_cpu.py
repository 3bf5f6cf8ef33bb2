"""A fused node's body -> one Numba loop over its output, split over rows across cores.

Like PyTensor's Numba backend (pytensor/link/numba/dispatch/elemwise.py), the body's scalar
formulas are written out as the source of one jitted function, which is saved as a file
so Numba's own cache (``cache=True``) keeps its machine code beside it. The file's name is
the hash of the body's canonical form and the loop's rank: a second process, or a second
model with the same chain, compiles nothing.

The loop runs over the output collapsed to (rows, last dim), the leading indices recovered
from the row number, and every input read through a broadcast view of the output's shape
(stride 0 where it broadcasts), so a bias, a per-row statistic and a full tensor are all
read in place. The function takes a row range and releases the GIL (``nogil``); a large
array's rows are split over one thread per core, a small one runs on the calling thread.
Numba's own ``parallel=True``/``prange`` was the first version: on this 2-core machine
shared with other jobs, its worker threads and OpenBLAS's spin against each other between
kernels (a tiny GPT's forward took 230 ms in fused kernels instead of 1 ms), it cannot
run a small array serially, and it compiles 2-3x slower; the split here keeps the threads
only where the work pays for them.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import math
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from tgraph.errors import BackendError

_LOADED: dict[str, object] = {}
_LOCK = threading.Lock()
#: below this many output elements a kernel runs on the calling thread only
PARALLEL_MIN = 1 << 15


def cache_dir() -> Path:
    """Where generated kernels live: $TGRAPH_CACHE_DIR, else ~/.cache/tgraph/kernels."""
    root = os.environ.get("TGRAPH_CACHE_DIR") or Path.home() / ".cache" / "tgraph"
    return Path(root) / "kernels"


def canonical(attrs: dict, ndim: int) -> str:
    """The text a kernel is keyed by: the body (ops, references, attrs, inlined constants),
    its outputs and the loop's rank."""
    return json.dumps({"body": attrs["body"], "outputs": attrs["outputs"], "ndim": ndim},
                      sort_keys=True, separators=(",", ":"))


def source(attrs: dict, n_inputs: int, ndim: int) -> str:
    """Python source of ``kernel(r0, r1, in0, .., out0, ..)`` for rows r0..r1 of arrays of
    rank ``ndim`` >= 2."""
    from tgraph.ops.registry import get_op

    outs = attrs["outputs"]
    lead = [f"i{d}" for d in range(ndim - 1)]
    idx = ", ".join([*lead, "j"])
    lines = [
        "import math", "import numpy as np", "from numba import njit", "", "",
        "@njit(cache=True, nogil=True)",
        f"def kernel(r0, r1, {', '.join([*(f'in{k}' for k in range(n_inputs)), *(f'out{k}' for k in range(len(outs)))])}):",
        f"    {', '.join(f'n{d}' for d in range(ndim))}, = out0.shape",
        "    for r in range(r0, r1):",
    ]
    rest = "r"
    for d in range(ndim - 2, 0, -1):  # leading indices from the row number
        lines.append(f"        i{d} = {rest} % n{d}")
        lines.append(f"        q{d} = {rest} // n{d}")
        rest = f"q{d}"
    lines.append(f"        i0 = {rest}")
    lines.append(f"        for j in range(n{ndim - 1}):")
    names = [f"in{k}[{idx}]" for k in range(n_inputs)]
    reductions = {}  # body index -> accumulator name; row sums in float64
    for k, entry in enumerate(attrs["body"]):
        args = [_literal(a) if isinstance(a, dict) else names[a] for a in entry["args"]]
        if entry["op"] in ("sum", "mean"):
            reductions[k] = f"acc{k}"
            lines.append(f"            acc{k} += {args[0]}")
        else:
            expr = get_op(entry["op"]).scalar(args, **entry.get("attrs", {}))
            lines.append(f"            v{k} = {expr}")
        names.append(f"v{k}")
    for k, ref in enumerate(outs):
        if ref - n_inputs not in reductions:
            lines.append(f"            out{k}[{idx}] = {names[ref]}")
    loop_at = lines.index(f"        for j in range(n{ndim - 1}):")
    lines[loop_at:loop_at] = [f"        {acc} = 0.0" for acc in reductions.values()]
    for k, ref in enumerate(outs):
        if ref - n_inputs in reductions:
            acc = reductions[ref - n_inputs]
            mean = attrs["body"][ref - n_inputs]["op"] == "mean"
            lines.append(f"        out{k}[{', '.join([*lead, '0'])}] = "
                         f"{acc}{f' / n{ndim - 1}' if mean else ''}")
    return "\n".join(lines) + "\n"


def _literal(a: dict) -> str:
    """An inlined constant as source text: only numbers reach the generated code."""
    value = a["value"]
    if isinstance(value, bool):
        return "True" if value else "False"
    if not isinstance(value, (int, float)) or (isinstance(value, float) and not math.isfinite(value)):
        return f"float({str(value)!r})"  # inf, nan: float('inf') is a number, not a name
    return repr(value)


def load(attrs: dict, n_inputs: int, ndim: int):
    """The jitted kernel for a body: from this process's memo, else the file cache, else
    written there now (atomically, so concurrent processes agree)."""
    key = canonical(attrs, ndim)
    with _LOCK:
        if key in _LOADED:
            return _LOADED[key]
        try:
            import numba  # noqa: F401
        except ImportError as e:
            raise BackendError("fused kernels need numba (pip install numba)") from e
        digest = hashlib.sha256(key.encode()).hexdigest()[:24]
        path = cache_dir() / f"fused_{digest}.py"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(source(attrs, n_inputs, ndim))
            os.replace(tmp, path)
        name = f"tgraph_fused_{digest}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # Numba's cache finds the function's module by name
        spec.loader.exec_module(module)
        _LOADED[key] = module.kernel
        return module.kernel


class FusedKernel:
    """A fused node's kernel on NumPy: broadcast views in, fresh outputs, one jitted loop."""

    def __init__(self, node):
        self.attrs = node.attrs
        self.n_inputs = len(node.inputs)
        self.dtypes = [np.dtype(v.dtype) for v in node.outputs]
        self.reduced = [node.attrs["body"][r - self.n_inputs]["op"] in ("sum", "mean")
                        for r in node.attrs["outputs"]]
        self.ndim = max(2, node.outputs[0].type.rank)
        self.kernel = None

    def __call__(self, *arrays):
        shape = np.broadcast_shapes(*(a.shape for a in arrays))
        loop = (1,) * (self.ndim - len(shape)) + shape
        outs = [np.empty(shape[:-1] + (1,) if red else shape, dt)
                for dt, red in zip(self.dtypes, self.reduced)]
        if self.kernel is None:
            self.kernel = load(self.attrs, self.n_inputs, self.ndim)
        if math.prod(shape):
            args = [*(np.broadcast_to(a, loop) for a in arrays),
                    *(o.reshape(loop[:-1] + o.shape[-1:]) for o in outs)]
            rows = math.prod(loop[:-1])
            parts = _pool_size() if math.prod(shape) >= PARALLEL_MIN else 1
            bounds = [rows * i // parts for i in range(parts + 1)]
            futures = [_pool().submit(self.kernel, a, b, *args)
                       for a, b in zip(bounds[1:-1], bounds[2:])]
            self.kernel(bounds[0], bounds[1], *args)
            for f in futures:
                f.result()
        return outs[0] if len(outs) == 1 else tuple(outs)


def _pool_size() -> int:
    """Threads a kernel splits over: NUMBA_NUM_THREADS if set, else the usable cores."""
    env = os.environ.get("NUMBA_NUM_THREADS")
    return max(1, int(env)) if env and env.isdigit() else len(os.sched_getaffinity(0))


@functools.cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max(_pool_size() - 1, 1), thread_name_prefix="tgraph-kernel")
