"""tgraph.backends: where kernels run. ``get_backend("numpy"|"cupy"|"auto")``."""

from __future__ import annotations

from tgraph.backends.numpy_backend import NumpyBackend
from tgraph.errors import BackendError

_NAMES = ("numpy", "cupy", "auto")


def get_backend(name: str = "numpy"):
    """A backend instance; "auto" takes CuPy only when a CUDA device really works."""
    if name == "numpy":
        return NumpyBackend()
    if name in ("cupy", "auto"):
        try:
            from tgraph.backends.cupy_backend import CupyBackend
            return CupyBackend()
        except BackendError:
            if name == "auto":
                return NumpyBackend()
            raise
    raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(_NAMES)}")


__all__ = ["NumpyBackend", "get_backend"]
