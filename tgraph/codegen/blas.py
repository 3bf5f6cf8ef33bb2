"""The BLAS behind every GEMM tgraph runs on the CPU: on an Intel CPU, Intel MKL when the
``mkl`` package is installed (``pip install tgraph[mkl]``); elsewhere, or without it,
SciPy's OpenBLAS.

Why MKL on Intel: it is the BLAS PyTorch's CPU build runs, and on a 2-core Intel Xeon
(AVX-512) its single-core SGEMM did 150-160 GFLOP/s on GPT config M's shapes where OpenBLAS
did 129-143. Why not on AMD: MKL takes its AVX2 code path on a CPU that is not Intel's,
while OpenBLAS runs its AVX-512 kernels on Zen 4. On a 2-core AMD EPYC (Zen 4) the M
training step's GEMMs took 137 ms with OpenBLAS and 147 with MKL, and gpt2-small's tied
head ([128, 768]·[768, 50257]ᵀ) 57 ms against 85 (benchmarks/RESULTS.md). MKL is loaded
with its sequential threading layer: tgraph's own threads split the work
(tgraph/parallel.py), so no OpenMP pool spins beside the fused kernels.
``TGRAPH_BLAS=openblas`` or ``TGRAPH_BLAS=mkl`` overrides the choice.

Compiled loops call ``?gemm`` through two symbols, ``tgraph_sgemm`` and ``tgraph_dgemm``,
with the Fortran calling convention (every argument by address): both libraries export it,
and a symbol name, unlike an address, stays valid in a kernel Numba loads from its disk
cache in another process. ``bind()`` points the symbols at the chosen library before any
such loop is loaded.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.metadata
import os
from dataclasses import dataclass

from llvmlite import binding

_MKL_THREADING_SEQUENTIAL = 1


@dataclass(frozen=True)
class Blas:
    name: str  # "mkl" or "openblas"
    sgemm: int  # addresses of the Fortran-convention ?gemm
    dgemm: int
    set_threads: object | None  # SciPy's OpenBLAS thread count (set, get), None for MKL


@functools.cache
def bind() -> Blas | None:
    """The BLAS in use, its ?gemm bound to the symbols compiled loops call; None if neither
    library can be loaded (matmul then runs NumPy's)."""
    choice = os.environ.get("TGRAPH_BLAS", "").lower() or preferred()
    first, second = (_mkl, _scipy_openblas) if choice == "mkl" else (_scipy_openblas, _mkl)
    blas = first() or second()
    if blas is not None:
        binding.add_symbol("tgraph_sgemm", blas.sgemm)
        binding.add_symbol("tgraph_dgemm", blas.dgemm)
    return blas


def preferred() -> str:
    """"mkl" on an Intel CPU, "openblas" on any other (see the module's docstring)."""
    try:
        with open("/proc/cpuinfo") as f:
            intel = any(line.startswith("vendor_id") and "GenuineIntel" in line for line in f)
    except OSError:
        intel = False
    return "mkl" if intel else "openblas"


def _mkl() -> Blas | None:
    try:
        files = importlib.metadata.files("mkl") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    paths = sorted(str(f.locate()) for f in files if f.name.startswith("libmkl_rt.so"))
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
            lib.MKL_Set_Threading_Layer(ctypes.c_int(_MKL_THREADING_SEQUENTIAL))
            return Blas("mkl", _address(lib.sgemm_), _address(lib.dgemm_), None)
        except (OSError, AttributeError):
            continue
    return None


def _scipy_openblas() -> Blas | None:
    try:
        import scipy.linalg.cython_blas as cython_blas

        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f
                            if "scipy_openblas" in line and "scipy.libs" in line})
    except (OSError, ImportError):
        return None
    for path in paths:
        lib = ctypes.CDLL(path)
        try:
            set_threads, get_threads = (lib.scipy_openblas_set_num_threads,
                                        lib.scipy_openblas_get_num_threads)
        except AttributeError:
            continue
        set_threads.argtypes, get_threads.restype = [ctypes.c_int], ctypes.c_int
        capsules = cython_blas.__pyx_capi__
        return Blas("openblas", _capsule_address(capsules["sgemm"]),
                    _capsule_address(capsules["dgemm"]), (set_threads, get_threads))
    return None


def _address(fn) -> int:
    return ctypes.cast(fn, ctypes.c_void_p).value


def _capsule_address(capsule) -> int:
    name = ctypes.pythonapi.PyCapsule_GetName
    name.restype, name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    pointer = ctypes.pythonapi.PyCapsule_GetPointer
    pointer.restype, pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    return pointer(capsule, name(capsule))


@contextlib.contextmanager
def one_thread():
    """The BLAS on one thread while tgraph's threads call it. MKL is loaded sequential;
    SciPy's OpenBLAS count is the process's, set for the call and restored after (a SciPy
    BLAS call another thread makes meanwhile runs on one thread, with the same result)."""
    blas = bind()
    if blas is None or blas.set_threads is None:
        yield
        return
    set_threads, get_threads = blas.set_threads
    before = get_threads()
    set_threads(1)
    try:
        yield
    finally:
        set_threads(before)
