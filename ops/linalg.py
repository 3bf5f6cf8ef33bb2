"""Matrix multiplication: batched, with NumPy broadcasting of the batch dims."""

from __future__ import annotations

import math

from tgraph.ops.elementwise import broadcast_types
from tgraph.ops.registry import OpDef, register_op
from tgraph.errors import ShapeError
from tgraph.shapes import broadcast, fmt_shape
from tgraph.types import TensorType


@register_op
class Matmul(OpDef):
    """a @ b over the last two axes; leading axes broadcast."""

    name = "matmul"
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
        return xp.matmul(a, b)

    def flops(self, in_shapes, out_shapes, **attrs):
        return 2 * math.prod(out_shapes[0]) * in_shapes[0][-1]

    def label(self, **attrs):
        return "MatMul"
