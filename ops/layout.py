"""Ops that move data without arithmetic: reshape, transpose, concat, split, slice,
broadcast_to, gather (embedding lookup), one_hot, positions."""

from __future__ import annotations

import math

import numpy as np

from tgraph import builder as tb
from tgraph.errors import ShapeError
from tgraph.ops.elementwise import unbroadcast, zeros
from tgraph.ops.registry import OpDef, register_op
from tgraph.shapes import INT_DTYPES, broadcast, dim_div, fmt_shape, norm_axis, shape_size
from tgraph.types import TensorType


class Movement(OpDef):
    attr_kinds: dict = {}

    def flops(self, in_shapes, out_shapes, **attrs):
        return 0


@register_op
class Reshape(Movement):
    """Same elements, new shape; one dim may be -1, dims may be symbols such as "B"."""

    name = "reshape"
    attr_kinds = {"shape": "shape"}
    signature = "reshape(x, shape=[B, T, 8, 64]) -> x with that shape"
    shape_attrs = ("shape",)

    def infer(self, types, shape):
        (t,) = types
        known = [d for d in shape if d != -1]
        if len(known) < len(shape) - 1:
            raise ShapeError("reshape allows at most one -1")
        total = shape_size(t.shape)
        if len(known) < len(shape):
            rest = dim_div(total, shape_size(known))
            if rest is None:
                raise ShapeError(f"cannot reshape {fmt_shape(t.shape)} to {list(shape)}")
            shape = [rest if d == -1 else d for d in shape]
        out = t.with_shape(shape)
        if shape_size(out.shape) != total:
            raise ShapeError(f"cannot reshape {fmt_shape(t.shape)} ({total} elements) to "
                             f"{fmt_shape(out.shape)}")
        return out

    def kernel(self, xp, x, shape):
        return x.reshape(shape)  # the method: np.reshape's wrapper took 4× as long

    def label(self, shape):
        return "Reshape"

    def vjp(self, node, grads):
        return [tb.reshape(grads[0], node.inputs[0].shape)]

    def examples(self, rng):
        x = rng.standard_normal((2, 3, 4))
        return [([x], {"shape": [6, -1]}), ([x], {"shape": [2, 3, 2, 2]})]


@register_op
class Transpose(Movement):
    """Permute axes."""

    name = "transpose"
    attr_kinds = {"perm": "ints"}
    signature = "transpose(x, perm=[0, 2, 1, 3]) -> permuted x"

    def infer(self, types, perm):
        (t,) = types
        if sorted(perm) != list(range(t.rank)):
            raise ShapeError(f"transpose perm {list(perm)} is not a permutation of rank {t.rank}")
        return t.with_shape([t.shape[p] for p in perm])

    def kernel(self, xp, x, perm):
        return x.transpose(perm)

    def label(self, perm):
        return f"Transpose {tuple(perm)}"

    def vjp(self, node, grads):
        perm = node.attrs["perm"]
        return [tb.transpose(grads[0], sorted(range(len(perm)), key=perm.__getitem__))]

    def examples(self, rng):
        return [([rng.standard_normal((2, 3, 4))], {"perm": [2, 0, 1]}),
                ([rng.standard_normal((3, 5))], {"perm": [1, 0]})]


@register_op
class Concat(Movement):
    """Join inputs along an axis."""

    # not fresh: the NumPy backend returns the inputs' own memory when they already lie
    # side by side in one array (attention's three gradients, backends/numpy_kernels.py)
    fresh_result = False

    name = "concat"
    attr_kinds = {"axis": "int"}
    signature = "concat(*xs, axis) -> joined"

    def infer(self, types, axis):
        first = types[0]
        ax = norm_axis(axis, first.rank)
        total = 0
        for t in types:
            if t.dtype != first.dtype or t.rank != first.rank or any(
                    a != b for i, (a, b) in enumerate(zip(t.shape, first.shape)) if i != ax):
                raise ShapeError(f"concat on axis {axis}: {first} and {t} do not fit")
            if not isinstance(t.shape[ax], int):
                raise ShapeError(f"concat axis {axis} must have int sizes, got {t.shape[ax]}")
            total += t.shape[ax]
        return first.with_shape([total if i == ax else d for i, d in enumerate(first.shape)])

    def kernel(self, xp, *xs, axis):
        return xp.concatenate(xs, axis=axis)

    def label(self, axis):
        return f"Concat (axis {axis})"

    def vjp(self, node, grads):
        ax = node.attrs["axis"]
        sizes = [v.shape[ax] for v in node.inputs]
        return list(tb.split(grads[0], sizes, axis=ax))

    def examples(self, rng):
        a = rng.standard_normal((2, 3, 4))
        return [([a, rng.standard_normal((2, 1, 4))], {"axis": 1}),
                ([a, a[..., :2], rng.standard_normal((2, 3, 1))], {"axis": -1})]


@register_op
class Split(Movement):
    """Cut along an axis into pieces of the given int sizes; one output per piece."""

    name = "split"
    attr_kinds = {"axis": "int", "sizes": "sizes"}
    signature = "split(x, axis, sizes=[64, 64]) -> pieces"

    def infer(self, types, axis, sizes):
        (t,) = types
        ax = norm_axis(axis, t.rank)
        if sum(sizes) != t.shape[ax]:
            raise ShapeError(f"split sizes {list(sizes)} do not add up to dim {t.shape[ax]} "
                             f"of {fmt_shape(t.shape)}")
        return [t.with_shape([s if i == ax else d for i, d in enumerate(t.shape)]) for s in sizes]

    def kernel(self, xp, x, axis, sizes):
        # basic slices (views): np.split took 8-10 µs a call, paid by every attention layer
        lead, pieces, start = (slice(None),) * (axis % x.ndim), [], 0
        for size in sizes:
            pieces.append(x[(*lead, slice(start, start + size))])
            start += size
        return tuple(pieces)

    def label(self, axis, sizes):
        return f"Split (axis {axis}) {list(sizes)}"

    def vjp(self, node, grads):
        parts = [zeros(v) if g is None else g for v, g in zip(node.outputs, grads)]
        return [tb.concat(*parts, axis=node.attrs["axis"])]

    def examples(self, rng):
        x = rng.standard_normal((2, 3, 4))
        return [([x], {"axis": 2, "sizes": [1, 3]}), ([x], {"axis": 0, "sizes": [1, 1]})]


@register_op
class Slice(Movement):
    """x[start:stop] along one axis (int bounds, stop may be None for the end)."""

    name = "slice"
    attr_kinds = {"axis": "int", "start": "int", "stop": "int?"}
    signature = "slice(x, axis, start, stop=None) -> part"

    def infer(self, types, axis, start, stop=None):
        (t,) = types
        ax = norm_axis(axis, t.rank)
        d = t.shape[ax]
        if isinstance(d, int):
            size = len(range(d)[start:stop])
        elif start == 0 and stop is None:
            size = d
        elif 0 <= start and stop is not None and stop >= 0:
            size = stop - start
        else:
            raise ShapeError(f"slice [{start}:{stop}] of symbolic dim {d} needs non-negative "
                             "int bounds")
        if size == 0 or (isinstance(size, int) and size < 0):
            raise ShapeError(f"slice [{start}:{stop}] of dim {d} is empty")
        return t.with_shape([size if i == ax else s for i, s in enumerate(t.shape)])

    def kernel(self, xp, x, axis, start, stop=None):
        idx = [slice(None)] * x.ndim
        idx[axis] = slice(start, stop)
        return x[tuple(idx)]

    def label(self, axis, start, stop=None):
        return f"Slice axis {axis} [{start}:{'' if stop is None else stop}]"

    def vjp(self, node, grads):
        return [tb.apply("unslice", grads[0], shape=list(node.inputs[0].shape), **node.attrs)]

    def examples(self, rng):
        x = rng.standard_normal((2, 5, 3))
        return [([x], {"axis": 1, "start": 1, "stop": 3}), ([x], {"axis": -1, "start": -2})]


@register_op
class Unslice(Movement):
    """Zeros of `shape` with x placed at [start:stop] along axis: slice's gradient."""

    name = "unslice"
    attr_kinds = {"shape": "shape", "axis": "int", "start": "int", "stop": "int?"}
    signature = "unslice(x, shape, axis, start, stop=None) -> [shape]"
    shape_attrs = ("shape",)

    def infer(self, types, shape, axis, start, stop=None):
        (t,) = types
        out = t.with_shape(shape)
        if Slice().infer([out], axis, start, stop) != t:
            raise ShapeError(f"unslice: {fmt_shape(t.shape)} is not the [{start}:{stop}] "
                             f"slice (axis {axis}) of {fmt_shape(out.shape)}")
        return out

    def kernel(self, xp, x, shape, axis, start, stop=None):
        out = xp.zeros(shape, dtype=x.dtype)
        idx = [slice(None)] * x.ndim
        idx[axis] = slice(start, stop)
        out[tuple(idx)] = x
        return out

    def jax_kernel(self, jnp, x, shape, axis, start, stop=None):
        idx = [slice(None)] * x.ndim
        idx[axis] = slice(start, stop)
        return jnp.zeros(shape, dtype=x.dtype).at[tuple(idx)].set(x)

    def vjp(self, node, grads):
        a = node.attrs
        return [tb.slice(grads[0], a["axis"], a["start"], a.get("stop"))]

    def examples(self, rng):
        return [([rng.standard_normal((2, 2, 3))], {"shape": [2, 5, 3], "axis": 1, "start": 1,
                                                   "stop": 3})]

    def label(self, shape, axis, start, stop=None):
        return f"Unslice axis {axis} [{start}:{'' if stop is None else stop}]"


@register_op
class BroadcastTo(Movement):
    """Broadcast to a shape (dims may be symbols)."""

    name = "broadcast_to"
    attr_kinds = {"shape": "shape"}
    signature = "broadcast_to(x, shape) -> x broadcast"
    shape_attrs = ("shape",)

    def infer(self, types, shape):
        (t,) = types
        out = broadcast(t.shape, shape)
        if out is None or tuple(out) != t.with_shape(shape).shape:
            raise ShapeError(f"cannot broadcast {fmt_shape(t.shape)} to {list(shape)}")
        return t.with_shape(shape)

    def kernel(self, xp, x, shape):
        return xp.broadcast_to(x, shape)

    def label(self, shape):
        return "Broadcast"

    def vjp(self, node, grads):
        return [unbroadcast(grads[0], node.inputs[0])]

    def examples(self, rng):
        return [([rng.standard_normal((3, 1))], {"shape": [2, 3, 4]}),
                ([rng.standard_normal(())], {"shape": [2, 2]})]


@register_op
class Gather(Movement):
    """Rows of a table picked by integer indices: the embedding lookup."""

    fresh_result = True

    name = "gather"
    signature = "gather(table[V, D], idx: int[...]) -> [..., D]"

    def infer(self, types, **attrs):
        table, idx = types
        if idx.dtype not in INT_DTYPES:
            raise ShapeError(f"gather indices must be int, got {idx.dtype}")
        if table.rank < 1:
            raise ShapeError("gather table must have rank ≥ 1")
        return table.with_shape((*idx.shape, *table.shape[1:]))

    def kernel(self, xp, table, idx):
        if idx.size and int(idx.min()) < 0:  # take() would wrap -1 to the last row
            raise IndexError(f"index {int(idx.min())} is out of bounds for a table of "
                             f"{table.shape[0]} rows")
        return xp.take(table, idx, axis=0)

    def jax_kernel(self, jnp, table, idx):
        # the ids cannot be looked at while JAX traces; runs check feeds' ids beforehand
        return jnp.take(table, idx, axis=0)

    def label(self, **attrs):
        return "Embedding lookup"

    def vjp(self, node, grads):
        table, idx = node.inputs
        return [tb.apply("scatter_add", grads[0], idx, shape=list(table.shape)), None]

    def examples(self, rng):
        # repeated indices: their rows' gradients must add up
        return [([rng.standard_normal((5, 3)), rng.integers(0, 5, (2, 4))], {}),
                ([rng.standard_normal((4,)), np.array([1, 1, 3])], {})]


@register_op
class ScatterAdd(Movement):
    """Zeros of `shape` (or `base`, when given) with each row of updates added at its index:
    gather's gradient. -O2 passes the dense gradient a tied embedding also gets as `base`
    (tgraph/passes/scatter.py), so only the looked-up rows are touched."""

    fresh_result = True

    name = "scatter_add"
    attr_kinds = {"shape": "shape"}
    signature = "scatter_add(updates[..., D], idx: int[...], base[V, D]?=None, shape=[V, D]) -> [V, D]"
    shape_attrs = ("shape",)

    def infer(self, types, shape):
        if len(types) not in (2, 3):
            raise ShapeError("scatter_add takes updates, indices and at most one base")
        upd, idx = types[:2]
        out = upd.with_shape(shape)
        if idx.dtype not in INT_DTYPES:
            raise ShapeError(f"scatter_add indices must be int, got {idx.dtype}")
        if upd.shape != (*idx.shape, *out.shape[1:]):
            raise ShapeError(f"scatter_add updates {fmt_shape(upd.shape)} must be indices "
                             f"{fmt_shape(idx.shape)} + rows {fmt_shape(out.shape[1:])}")
        if len(types) == 3 and types[2] != out:
            raise ShapeError(f"scatter_add base must be {out}, got {types[2]}")
        return out

    def kernel(self, xp, upd, idx, base=None, shape=()):
        out = xp.zeros(shape, dtype=upd.dtype) if base is None else base.copy()
        xp.add.at(out, idx.reshape(-1), upd.reshape(-1, *shape[1:]))
        return out

    def jax_kernel(self, jnp, upd, idx, base=None, shape=()):
        out = jnp.zeros(shape, dtype=upd.dtype) if base is None else base
        return out.at[idx.reshape(-1)].add(upd.reshape(-1, *shape[1:]))

    def vjp(self, node, grads):
        return [tb.gather(grads[0], node.inputs[1]), None, *grads[:len(node.inputs) - 2]]

    def flops(self, in_shapes, out_shapes, **attrs):
        return math.prod(in_shapes[0])

    def examples(self, rng):
        upd, idx = rng.standard_normal((2, 4, 3)), rng.integers(0, 5, (2, 4))
        return [([upd, idx], {"shape": [5, 3]}),
                ([upd, idx, rng.standard_normal((5, 3))], {"shape": [5, 3]})]

    def label(self, shape):
        return "Scatter-add (embedding gradient)"


@register_op
class OneHot(Movement):
    """Integer indices to one-hot vectors of length depth."""

    fresh_result = True

    name = "one_hot"
    attr_kinds = {"depth": "pos", "dtype": "dtype"}
    signature = 'one_hot(idx: int[...], depth, dtype="float32") -> [..., depth]'

    def infer(self, types, depth, dtype="float32"):
        (idx,) = types
        if idx.dtype not in INT_DTYPES:
            raise ShapeError(f"one_hot indices must be int, got {idx.dtype}")
        return TensorType(dtype, (*idx.shape, depth))

    def kernel(self, xp, idx, depth, dtype="float32"):
        return (idx[..., None] == xp.arange(depth)).astype(dtype)

    def label(self, depth, dtype="float32"):
        return f"One-hot ({depth})"

    def vjp(self, node, grads):
        return [None]  # integer input

    def examples(self, rng):
        return [([rng.integers(0, 4, (2, 3))], {"depth": 4, "dtype": "float64"})]


@register_op
class Positions(Movement):
    """0, 1, …, n−1 where n is x's size along an axis: positions computed from a shape,
    so no max_len table or T×T constant has to be shared across layers."""

    fresh_result = True

    name = "positions"
    attr_kinds = {"axis": "int", "dtype": "dtype"}
    shape_only = True
    signature = 'positions(x, axis, dtype="float32") -> [x.shape[axis]]'

    def infer(self, types, axis, dtype="float32"):
        (t,) = types
        return TensorType(dtype, (t.shape[norm_axis(axis, t.rank)],))

    def kernel(self, xp, x, axis, dtype="float32"):
        return xp.arange(x.shape[axis], dtype=dtype)

    def label(self, axis, dtype="float32"):
        return f"Positions (axis {axis})"

    def vjp(self, node, grads):
        return [None]  # a function of the shape only

    def examples(self, rng):
        return [([rng.standard_normal((2, 5, 3))], {"axis": 1, "dtype": "float64"})]
