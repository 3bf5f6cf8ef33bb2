"""TensorType: a dtype and a shape of int or symbolic dims."""

from __future__ import annotations

from dataclasses import dataclass

from tgraph.shapes import Dim, check_dtype, fmt_shape, norm_dim


@dataclass(frozen=True)
class TensorType:
    dtype: str
    shape: tuple[Dim, ...]

    def __post_init__(self):
        check_dtype(self.dtype)
        object.__setattr__(self, "shape", tuple(norm_dim(d) for d in self.shape))

    @property
    def rank(self) -> int:
        return len(self.shape)

    def with_shape(self, shape) -> TensorType:
        return TensorType(self.dtype, tuple(shape))

    def with_dtype(self, dtype: str) -> TensorType:
        return TensorType(dtype, self.shape)

    def __str__(self) -> str:
        return f"{self.dtype}[{fmt_shape(self.shape)}]"

    def to_json(self) -> dict:
        return {"dtype": self.dtype, "shape": list(self.shape)}

    @staticmethod
    def from_json(d: dict) -> TensorType:
        return TensorType(d["dtype"], tuple(d["shape"]))
