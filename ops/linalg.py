"""Matrix multiplication: batched, with NumPy broadcasting of the batch dims."""

from __future__ import annotations

import math

from tgraph import builder as tb
from tgraph.errors import ShapeError
from tgraph.ops.elementwise import broadcast_types, unbroadcast
from tgraph.ops.registry import OpDef, register_op
from tgraph.shapes import broadcast, fmt_shape
from tgraph.types import TensorType


@register_op
class Matmul(OpDef):
    """a @ b over the last two axes; leading axes broadcast."""

    fresh_result = True

    name = "matmul"
    attr_kinds: dict = {}
    signature = "matmul(a[..., M, K], b[..., K, N]) -> [..., M, N]"

    def infer(self, types, **attrs):
        a, b = types
        broadcast_types([a.with_shape(()), b.with_shape(())], self.name)  # dtype check
        if a.rank < 2 or b.rank < 2:
            raise ShapeError(f"matmul needs rank ≥ 2 inputs, got {fmt_shape(a.shape)} and "
                             f"{fmt_shape(b.shape)}")
        if a.shape[-1] != b.shape[-2]:
            raise ShapeError(f"matmul inner dims differ: {fmt_shape(a.shape)} @ "
                             f"{fmt_shape(b.shape)} ({a.shape[-1]} vs {b.shape[-2]})")
        batch = broadcast(a.shape[:-2], b.shape[:-2])
        if batch is None:
            raise ShapeError(f"matmul batch dims do not broadcast: {fmt_shape(a.shape)} @ "
                             f"{fmt_shape(b.shape)}")
        return TensorType(a.dtype, (*batch, a.shape[-2], b.shape[-1]))

    def kernel(self, xp, a, b):
        if b.ndim == 2 < a.ndim:
            # x[..., K] @ W[K, N] as one 2-D GEMM over all rows: batched matmul would
            # run one small GEMM per leading index
            return xp.matmul(a.reshape(-1, a.shape[-1]), b).reshape(*a.shape[:-1], b.shape[-1])
        return xp.matmul(a, b)

    def flops(self, in_shapes, out_shapes, **attrs):
        return 2 * math.prod(out_shapes[0]) * in_shapes[0][-1]

    def vjp(self, node, grads):
        (a, b), g = node.inputs, grads[0]
        ga = unbroadcast(g @ swap_last(b), a)
        if b.type.rank == 2 < a.type.rank:
            # a shared weight: one [K, B·T] @ [B·T, N] product, not B products and a sum
            k, n = b.shape
            gb = swap_last(tb.reshape(a, [-1, k])) @ tb.reshape(g, [-1, n])
        else:
            gb = unbroadcast(swap_last(a) @ g, b)
        return [ga, gb]

    def examples(self, rng):
        return [([rng.standard_normal(sa), rng.standard_normal(sb)], {})
                for sa, sb in (((4, 5), (5, 3)), ((2, 4, 5), (5, 3)), ((3, 5), (2, 5, 3)),
                               ((2, 1, 4, 5), (3, 5, 2)))]

    def label(self, **attrs):
        return "MatMul"


def swap_last(x):
    """x with its last two axes swapped (the transpose a matmul's gradient needs)."""
    r = x.type.rank
    return tb.transpose(x, [*range(r - 2), r - 1, r - 2])
