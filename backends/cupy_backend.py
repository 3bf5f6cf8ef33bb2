"""The GPU backend: the registry's kernels run with xp = cupy, plus a few fused overrides.

cupy-cuda12x imports fine on a machine without a driver and fails only on first use, so
constructing the backend runs one tiny kernel; any failure becomes a one-line BackendError
(``auto`` then falls back to NumPy).
"""

from __future__ import annotations

from tgraph.errors import BackendError

_NOT_INSTALLED = ("CuPy is not installed: pip install -e '.[gpu]' in a checkout of tgraph (or "
                  "pip install cupy-cuda12x)")
_NO_DEVICE = "CuPy is installed but no CUDA device/driver is usable: {}"


def load_cupy():
    """The cupy module, once a tiny kernel has really run on the device."""
    try:
        import cupy
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] != "cupy":
            raise BackendError(f"CuPy cannot be imported: {_first_line(e)}") from None
        raise BackendError(_NOT_INSTALLED) from None
    except ImportError as e:
        raise BackendError(f"CuPy cannot be imported: {_first_line(e)}") from None
    try:
        # compiles and launches an elementwise kernel: catches a missing driver, no device,
        # and a missing NVRTC alike, which a device count alone would not
        if float((cupy.arange(4, dtype=cupy.float32) * 2).sum()) != 12.0:
            raise RuntimeError("a test kernel gave a wrong result")
    except Exception as e:  # noqa: BLE001 (CUDARuntimeError, CompileException, no libnvrtc...)
        raise BackendError(_NO_DEVICE.format(_first_line(e))) from None
    return cupy


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else "") or type(e).__name__


class CupyBackend:
    name = "cupy"

    def __init__(self):
        self.xp = load_cupy()
        from tgraph.backends.cupy_kernels import KERNELS

        self.kernels = dict(KERNELS)
        self._pool = self.xp.get_default_memory_pool()

    def asarray(self, a, dtype=None):
        return self.xp.asarray(a, dtype=dtype)

    def to_numpy(self, a):
        return self.xp.asnumpy(a)

    def synchronize(self) -> None:
        self.xp.cuda.Device().synchronize()

    def prepare(self, node):
        """A fused node as one ElementwiseKernel (tgraph/codegen/cuda.py); a body with a
        reduction or a formula with no C form runs op by op (the registry kernel)."""
        if node.op == "fused":
            from tgraph.codegen.cuda import CupyFusedKernel, Untranslatable

            try:
                return CupyFusedKernel(node)
            except Untranslatable:
                return None
        return None

    # ----- device memory, for benchmarks -----------------------------------------------
    def reset_peak_memory(self) -> None:
        """Return the pool's cached free blocks to the driver, so the pool's size grows
        again from what is live now."""
        self.synchronize()
        self._pool.free_all_blocks()

    def peak_memory_bytes(self) -> int:
        """Device bytes the memory pool holds: since it reuses freed blocks before asking
        for more, after ``reset_peak_memory`` and a run this is the run's high-water mark
        (rounded up to the pool's block sizes)."""
        return int(self._pool.total_bytes())
