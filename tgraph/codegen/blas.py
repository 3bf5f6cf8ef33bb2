"""The BLAS behind every GEMM tgraph runs on the CPU: on an Intel CPU, Intel MKL when the
``mkl`` package is installed (``pip install tgraph[mkl]``); elsewhere, or without it, the
OpenBLAS NumPy's wheel bundles (``scipy_openblas64``). On a CPU with AVX-512 that is not
Intel's, float32 GEMMs go to oneDNN's ``dnnl_sgemm`` when ``onednn-cpu-gomp`` is installed
(``pip install tgraph[onednn]``), float64 ones still to OpenBLAS.

Why oneDNN there: its AVX-512 SGEMM is chosen by the CPU's instructions, not its vendor,
and on a 2-core AMD EPYC (Zen 4) it ran tgraph's two-core split of gpt2-small's products
at 203-225 GFLOP/s where OpenBLAS's ran at 164-191 (and JAX's XLA at 187-205): [128, 768]
·[768, 3072] 203 against 164, the tied head [128, 768]·[768, 50257] 205 against 162 (2026-12-07,
benchmarks/RESULTS.md). It takes OpenMP's thread count of the calling thread, so each call
sets it to one and puts it back (gemm.py). Its blocking of the dot products changes when it
is given fewer than ~112 rows or columns, so a split never gives it a part that narrow
(``gemm._ROWS_LEAST``): the bits do not depend on where a split cuts.

Why NumPy's OpenBLAS and not SciPy's: NumPy's wheel carries a newer one (0.3.31 against
SciPy's 0.3.30 here), whose single-core SGEMM is 10-37 % faster on the short products of a
batch of one sequence (gpt2-small's [128, 768]·[768, 1536]: 3.16 ms against 3.48; [64,
3072]·[3072, 768]: 3.59 against 4.93) and equal on GPT config M's [1024, …] ones. It is
built with 64-bit integers (ILP64), so every loop here passes the BLAS 64-bit integers;
MKL exports the same interface as ``sgemm_64_``.

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
with the Fortran calling convention (every argument by address, integers 64-bit): both
libraries export it,
and a symbol name, unlike an address, stays valid in a kernel Numba loads from its disk
cache in another process. ``bind()`` points the symbols at the chosen library before any
such loop is loaded.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import importlib.metadata
import os
import threading

from llvmlite import binding

_MKL_THREADING_SEQUENTIAL = 1


@dataclasses.dataclass(frozen=True)
class Blas:
    name: str  # "mkl" or "openblas"
    sgemm: int  # addresses of the Fortran-convention ?gemm
    dgemm: int
    set_threads: object | None  # OpenBLAS's thread count (set, get), None for MKL
    #: oneDNN's row-major float32 GEMM (``dnnl_sgemm``), and its OpenMP runtime's
    #: ``omp_set_num_threads`` and ``omp_get_max_threads``, by address; 0 when float32 GEMMs
    #: go through ``sgemm``
    rows_sgemm: int = 0
    omp_set: int = 0
    omp_get: int = 0


@functools.cache
def bind() -> Blas | None:
    """The BLAS in use, its ?gemm bound to the symbols compiled loops call; None if neither
    library can be loaded (matmul then runs NumPy's)."""
    choice = os.environ.get("TGRAPH_BLAS", "").lower() or preferred()
    first, second = (_mkl, _numpy_openblas) if choice == "mkl" else (_numpy_openblas, _mkl)
    blas = first() or second()
    if blas is None:
        return None
    binding.add_symbol("tgraph_sgemm", blas.sgemm)
    binding.add_symbol("tgraph_dgemm", blas.dgemm)
    onednn = _onednn() if choice == "onednn" else None
    return blas if onednn is None else dataclasses.replace(blas, **onednn)


def preferred() -> str:
    """"mkl" on an Intel CPU, "onednn" on another with AVX-512, "openblas" on any other (see
    the module's docstring)."""
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read(1 << 16)
    except OSError:
        return "openblas"
    if "GenuineIntel" in info:
        return "mkl"
    return "onednn" if " avx512f " in info else "openblas"


def _onednn() -> dict | None:
    """The addresses ``Blas`` keeps of the ``onednn-cpu-gomp`` package, None without it."""
    try:
        files = importlib.metadata.files("onednn-cpu-gomp") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for path in sorted(str(f.locate()) for f in files if f.name.startswith("libdnnl.so")):
        try:
            lib = ctypes.CDLL(path)
            omp = ctypes.CDLL("libgomp.so.1")  # the runtime libdnnl links, loaded with it
            return {"rows_sgemm": _address(lib.dnnl_sgemm),
                    "omp_set": _address(omp.omp_set_num_threads),
                    "omp_get": _address(omp.omp_get_max_threads)}
        except (OSError, AttributeError):
            continue
    return None


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
            return Blas("mkl", _address(lib.sgemm_64_), _address(lib.dgemm_64_), None)
        except (OSError, AttributeError):
            continue
    return None


def _numpy_openblas() -> Blas | None:
    import numpy  # noqa: F401  (loads the library: NumPy's own module links it)

    try:
        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f
                            if "scipy_openblas64_" in line and "numpy.libs" in line})
    except OSError:
        return None
    for path in paths:
        lib = ctypes.CDLL(path)
        try:
            set_threads, get_threads = (lib.scipy_openblas_set_num_threads64_,
                                        lib.scipy_openblas_get_num_threads64_)
            sgemm, dgemm = lib.scipy_sgemm_64_, lib.scipy_dgemm_64_
        except AttributeError:
            continue
        set_threads.argtypes, get_threads.restype = [ctypes.c_int], ctypes.c_int
        return Blas("openblas", _address(sgemm), _address(dgemm), (set_threads, get_threads))
    return None


def _address(fn) -> int:
    return ctypes.cast(fn, ctypes.c_void_p).value


class _OneThread:
    """The BLAS on one thread while tgraph's threads call it. MKL is loaded sequential;
    OpenBLAS's count is the process's, set to 1 by the outermost of nested or concurrent
    uses and restored by the last to leave (a NumPy matmul another thread makes meanwhile
    runs on one thread, with the same result). A class, not a generator: 1.5 µs a use
    against 3.5, paid by every GEMM and attention call."""

    def __init__(self):
        self.lock, self.users, self.before = threading.Lock(), 0, 1

    def __enter__(self):
        blas = bind()
        if blas is not None and blas.set_threads is not None:
            set_threads, get_threads = blas.set_threads
            with self.lock:
                if not self.users:
                    self.before = get_threads()
                    set_threads(1)
                self.users += 1

    def __exit__(self, *exc):
        blas = bind()
        if blas is not None and blas.set_threads is not None:
            with self.lock:
                self.users -= 1
                if not self.users:
                    blas.set_threads[0](self.before)


_ONE_THREAD = _OneThread()


def one_thread() -> _OneThread:
    """A context in which the BLAS runs on one thread (see _OneThread)."""
    return _ONE_THREAD
