"""The Backend protocol: an array namespace plus optional faster kernels by op name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


class Backend(Protocol):
    name: str
    #: the array namespace the registry's kernels are written against (numpy or cupy)
    xp: Any
    #: op name -> kernel(xp, *arrays, **attrs) that replaces the registry's for this backend
    kernels: dict[str, Callable]

    def asarray(self, a, dtype=None) -> Any:
        """Move a host array to this backend (once, before a run)."""

    def to_numpy(self, a) -> Any:
        """Bring a result back to the host as a NumPy array."""

    def synchronize(self) -> None:
        """Wait for queued work (timing)."""

    def prepare(self, node) -> Any:
        """Optional: a callable(*arrays) compiled for ``node`` (a fused chain), or None to
        use the op's kernel."""
