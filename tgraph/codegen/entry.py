"""C entry points for generated loops: every loop tgraph writes (fused chains, row kernels,
attention, AdamW) is compiled as a Numba ``cfunc``, ``void entry(int64 lo, int64 hi, int64
*args)``, that reads its arrays and scalars from one int64 array. A worker thread calls it
without the GIL (``parallel.CompiledJob``), as it calls a GEMM's part.

Why: a part given as a Python callable (a jitted function through Numba's dispatcher) made
the worker wait for the GIL, held by the caller until its own part entered compiled code:
LayerNorm over [1024, 256] took 150 µs split so, 89 µs split as a C entry, 125 µs whole on
one core. A GPT config M training step splits ~50 such loops.

Why the loop's body is written inside the cfunc, not called there as a jitted function: a
cfunc that calls a separate jitted function compiles both and links them, 0.29 s for that
LayerNorm against 0.16 s with the body inside (the same as the jitted function alone).

A kernel is written as a function whose parameters say their types::

    def kernel(r0, r1, x: "F 2d", ids: "int64 1d", out: "F 2d", eps: float):

``F`` is the kernel's float dtype; ``2d`` a C-contiguous array of that rank; ``3d strided``
any layout with non-negative strides (a broadcast view); ``int``, ``bool`` and ``float``
scalars. The first two parameters are the range a call runs. ``entry_source`` turns it into
the cfunc's source, ``Entry.job`` packs the values: an array as its address and shape (and
extent and byte strides when strided), an int or bool as itself, a float as its float64 bits.

An exception cannot leave a C entry (Numba prints it and returns): a loop that can fail
where its caller cannot check first (attention's per-thread buffers) catches it and sets a
flag the caller raises from.
"""

from __future__ import annotations

import ast
import textwrap

import numpy as np
from numba import types
from numba.extending import intrinsic

from tgraph.parallel import CompiledJob, data_address

#: the decorator every entry is compiled with (its flags are added)
ENTRY_SIGNATURE = "types.void(types.int64, types.int64, types.CPointer(types.int64))"
_SCALARS = ("int", "bool", "float")


@intrinsic
def pointer(typingctx, address, dtype):
    """A typed pointer from an integer address (or another pointer), for ``carray``."""
    target = types.CPointer(dtype.dtype)

    def codegen(context, builder, signature, args):
        llvm_type = context.get_value_type(target)
        if isinstance(signature.args[0], types.CPointer):
            return builder.bitcast(args[0], llvm_type)
        return builder.inttoptr(args[0], llvm_type)

    return target(address, dtype), codegen


class Param:
    """One parameter: ``kind`` is "int", "bool", "float", "array" or "strided"."""

    def __init__(self, name: str, annotation: str, dtype: np.dtype):
        self.name = name
        if annotation in _SCALARS:
            self.kind, self.ndim, self.dtype = annotation, 0, None
            return
        words = annotation.split()
        self.kind = "strided" if words[-1] == "strided" else "array"
        self.dtype = np.dtype(dtype if words[0] == "F" else words[0])
        self.ndim = int(words[1].removesuffix("d"))

    @property
    def slots(self) -> int:
        """int64s it takes in the arguments: address and shape (and extent and strides)."""
        if self.kind in _SCALARS:
            return 1
        return 1 + self.ndim if self.kind == "array" else 2 + 2 * self.ndim


def _parse(source: str, dtype) -> tuple[list[str], list[Param], str]:
    """A kernel's range names, typed parameters and body (its lines, indented once)."""
    (fn,) = ast.parse(source).body
    body = "".join(source.splitlines(keepends=True)[fn.body[0].lineno - 1:])
    names = [a.arg for a in fn.args.args]
    params = []
    for a in fn.args.args[2:]:
        note = a.annotation
        text = note.value if isinstance(note, ast.Constant) else getattr(note, "id", None)
        if not isinstance(text, str):
            raise ValueError(f"kernel parameter {a.arg!r} has no type annotation")
        params.append(Param(a.arg, text, dtype))
    return names[:2], params, body


def entry_source(source: str, dtype, decorator: str) -> tuple[str, list[Param]]:
    """The source of ``entry`` (the kernel ``source`` as a cfunc, its body inside) after
    ``decorator`` (a ``@cfunc(ENTRY_SIGNATURE, ...)`` line), and the parameters it packs."""
    (lo, hi), params, body = _parse(source, dtype)
    count = sum(p.slots for p in params)
    lines = [decorator, f"def entry({lo}, {hi}, argp):",
             f"    a_ = carray(argp, ({count},))",
             f"    f_ = carray(pointer(argp, np.float64), ({count},))"]
    at = 0
    for p in params:
        if p.kind == "int":
            lines.append(f"    {p.name} = a_[{at}]")
        elif p.kind == "bool":
            lines.append(f"    {p.name} = a_[{at}] != 0")
        elif p.kind == "float":
            lines.append(f"    {p.name} = f_[{at}]")
        else:
            dims = ", ".join(f"a_[{at + 1 + d}]" for d in range(p.ndim))
            if p.kind == "array":
                lines.append(f"    {p.name} = carray(pointer(a_[{at}], np.{p.dtype.name}), "
                             f"({dims},))")
            else:
                dims = ", ".join(f"a_[{at + 2 + d}]" for d in range(p.ndim))
                steps = ", ".join(f"a_[{at + 2 + p.ndim + d}]" for d in range(p.ndim))
                lines.append(f"    {p.name} = np.lib.stride_tricks.as_strided(carray(pointer("
                             f"a_[{at}], np.{p.dtype.name}), (a_[{at + 1}],)), "
                             f"shape=({dims},), strides=({steps},))")
        at += p.slots
    return "\n".join(lines) + "\n" + body, params


IMPORTS = textwrap.dedent("""\
    from numba import carray, cfunc, types
    from tgraph.codegen.entry import ENTRY_SIGNATURE, pointer
""")


#: packings an entry remembers (layouts of its arrays, values of its scalars)
PACKS_MAX = 256


class Entry:
    """A compiled loop's entry point and how its parameters are packed."""

    def __init__(self, function, params: list[Param]):
        self.function, self.params = function, params
        self.address = function.address
        self._packs: dict[tuple, tuple] = {}

    def job(self, *values) -> CompiledJob:
        """The loop over ``values`` as a part any thread runs; arrays are checked against
        their parameter's dtype, rank and layout (a mismatch is a bug in the caller).

        The packing is remembered by the arrays' layouts and the scalars' values, so a call
        seen before only writes the arrays' addresses into a copy: the loops of a training
        step meet the same layouts every step, and packing anew took 10-40 µs a call there
        (the GEMMs before it had evicted this Python from the caches)."""
        layout = tuple([(v.shape, v.strides, v.dtype) if isinstance(v, np.ndarray) else v
                        for v in values])
        pack = self._packs.get(layout)
        if pack is None:
            pack = self.pack(values)
            if len(self._packs) >= PACKS_MAX:
                self._packs.clear()
            self._packs[layout] = pack
        template, slots = pack
        args = template.copy()
        for slot, k in slots:
            args[slot] = data_address(values[k])
        return CompiledJob(self.address, args, keep=values)

    def pack(self, values) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """The int64 arguments for ``values`` and, for each array, (its address's slot, its
        position among the values)."""
        args: list[int] = []
        slots = []
        for k, (p, v) in enumerate(zip(self.params, values, strict=True)):
            if p.kind == "float":
                args.append(int(np.float64(v).view(np.int64)))
            elif p.kind in ("int", "bool"):
                args.append(int(v))
            else:
                slots.append((len(args), k))
                args += _array_slots(p, v)
        return np.array(args, np.int64), slots

    def __call__(self, lo: int, hi: int, *values) -> None:
        """Run the loop over lo..hi on this thread."""
        self.job(*values)(lo, hi)


def _array_slots(p: Param, v: np.ndarray) -> list[int]:
    if not isinstance(v, np.ndarray) or v.dtype != p.dtype or v.ndim != p.ndim:
        raise TypeError(f"kernel parameter {p.name!r} takes a {p.dtype}[{p.ndim}d] array, "
                        f"got {getattr(v, 'dtype', type(v).__name__)}"
                        f"[{getattr(v, 'ndim', '?')}d]")
    if p.kind == "array":
        if not v.flags.c_contiguous:
            raise TypeError(f"kernel parameter {p.name!r} takes a C-contiguous array")
        return [data_address(v), *v.shape]
    if any(s < 0 for s in v.strides):
        raise TypeError(f"kernel parameter {p.name!r} takes non-negative strides")
    extent = 1 + sum((n - 1) * s for n, s in zip(v.shape, v.strides)) // v.itemsize
    return [data_address(v), extent if v.size else 0, *v.shape, *v.strides]
