"""Matmul on tgraph's kernel threads: one BLAS GEMM per product, the work split over cores.

Every float matmul of the NumPy backend comes here. Two cases:

- One GEMM (a weight shared by the batch: ``x[B, T, D] @ w[D, F]``, the leading axes merged
  into rows): the output's rows (or columns, the longer side) are split over the cores,
  each part one single-threaded GEMM on its slice.
- A batch of products (attention's Q·Kᵀ, weights·V and their gradients: 64 products of
  128×32 by 32×128 in GPT config M): each product handed to the BLAS as it lies in memory,
  Q, K and V being heads sliced out of one [B, T, 3·D] projection (a leading dimension and
  a transpose flag per operand, no copy), the batch split over the cores. NumPy's matmul
  runs them one after another, 0.6-0.9 ms a call here; this 0.4-0.5 ms.

Why not NumPy's matmul and its BLAS's threads: OpenBLAS's workers spin for
2**OPENBLAS_THREAD_TIMEOUT cycles after each GEMM (2**28, 0.1 s, unless the variable was
set before NumPy loaded), so one of two cores stayed busy through every fused kernel that
followed, and each of those ran at half speed (GPT config M forward: 67 ms so, 57 ms with
the spin cut short). Here one pool of threads does all the work.

The GEMM is the BLAS that ``blas.py`` picks (MKL, oneDNN's float32 GEMM, or NumPy's
OpenBLAS), on one thread, called by address from compiled parts (``parallel.CompiledJob``)
that a worker thread runs without ever taking the GIL. Each output element is the BLAS's dot
product over K whatever the split (oneDNN's parts kept wide enough for that,
``_ROWS_LEAST``), so the result does not depend on the number of cores.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import carray, cfunc, njit, types
from numba.extending import intrinsic

from tgraph.codegen.blas import bind, one_thread
from tgraph.parallel import CompiledJob, cores, data_address, split

#: multiply-adds below which a GEMM runs on the calling thread only (waking a thread costs
#: more than half of it)
SPLIT_MIN = 1 << 21
#: rows or columns per unit of a split GEMM: a multiple of the BLAS's register tile
_BLOCK = 16

# ?gemm with the Fortran convention (every argument by address), by the symbol names blas.py
# binds, so these loops cache on disk like any other kernel
_WORD = types.intp
_SGEMM = types.ExternalFunction("tgraph_sgemm", types.void(*[_WORD] * 13))
_DGEMM = types.ExternalFunction("tgraph_dgemm", types.void(*[_WORD] * 13))
bind()  # the symbols bound before any loop below (or attention's) is compiled or loaded


#: blas_gemm's one signature: callers' literals and unsigned addresses are cast to it, where
#: each combination of them compiled a variant of its own (five for attention's calls)
_BLAS_GEMM = types.void(*[types.int64] * 14, types.int64[::1])


@njit(_BLAS_GEMM, nogil=True, cache=True)
def blas_gemm(kind, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, scratch):
    """Column-major c (m×n) = op(a)·op(b): kind ord('s') or ord('d'), trans letters as codes,
    a, b, c, alpha, beta as addresses; scratch: an int64[8] the call's integers go through
    (the BLAS is ILP64, blas.py)."""
    scratch[0], scratch[1], scratch[2], scratch[3] = transa, transb, m, n
    scratch[4], scratch[5], scratch[6], scratch[7] = k, lda, ldb, ldc
    at = scratch.ctypes.data
    if kind == 115:
        _SGEMM(at, at + 8, at + 16, at + 24, at + 32, alpha, a, at + 40, b, at + 48, beta, c,
               at + 56)
    else:
        _DGEMM(at, at + 8, at + 16, at + 24, at + 32, alpha, a, at + 40, b, at + 48, beta, c,
               at + 56)


# A split GEMM's part is a CompiledJob: a C function of (lo, hi, int64 *args) that a worker
# thread calls without taking the GIL. Both read the same header of args:
(_KIND, _A, _B, _C, _M, _N, _K, _FLAG_B, _FLAG_A, _LD_B, _LD_A, _ONE, _ITEMSIZE, _ROWS_AT,
 _OMP_SET, _OMP_GET, _HEADER) = range(17)
#: the kind of a float32 GEMM through oneDNN's row-major ``dnnl_sgemm`` (blas.py)
_ROWS = ord("r")
#: units (of _BLOCK) in each part of a oneDNN GEMM at least: oneDNN blocks the dot products
#: differently when the rows or columns it is given number fewer than ~112 (K 1024, here),
#: so narrower parts would change bits with where a split cuts
_ROWS_LEAST = 8
_JOB_SIGNATURE = types.void(types.int64, types.int64, types.CPointer(types.int64))
#: alpha and beta, [1, 0] in each dtype, alive as long as the module (parts read them by
#: address), and that address (``ndarray.ctypes`` takes ~2 µs a call)
_ONE_ZERO = {np.dtype(t): np.array([1, 0], t) for t in (np.float32, np.float64)}
_ONE_ZERO_AT = {t: a.ctypes.data for t, a in _ONE_ZERO.items()}


def _header(a: np.ndarray, b: np.ndarray, c: np.ndarray, m: int, n: int, k: int,
            read_a: tuple[int, int], read_b: tuple[int, int]) -> list:
    """The header: the kind (a dtype code, or _ROWS), the three addresses, sizes, B's then A's
    transpose letter and leading dimension (as the column-major GEMM reads them), where
    [1, 0] lies, the itemsize, and oneDNN's three functions (0 without it)."""
    blas = bind()
    kind = ord("d") if a.dtype == np.float64 else _ROWS if blas.rows_sgemm else ord("s")
    return [kind, data_address(a), data_address(b), data_address(c), m, n, k, read_b[0],
            read_a[0], read_b[1], read_a[1], _ONE_ZERO_AT[a.dtype], a.itemsize,
            blas.rows_sgemm, blas.omp_set, blas.omp_get]


@intrinsic
def _call_rows(typingctx, address, transa, transb, m, n, k, a, lda, b, ldb, c, ldc):
    """``dnnl_sgemm`` at ``address``: row-major c = op(a)·op(b), alpha 1 and beta 0."""
    def codegen(context, builder, signature, values):
        i8, i32, i64, f32 = ir.IntType(8), ir.IntType(32), ir.IntType(64), ir.FloatType()
        ptr = f32.as_pointer()
        fnty = ir.FunctionType(i32, [i8, i8, i64, i64, i64, f32, ptr, i64, ptr, i64, f32, ptr,
                                     i64])
        fn = builder.inttoptr(values[0], fnty.as_pointer())
        at = [builder.inttoptr(values[i], ptr) for i in (6, 8, 10)]
        builder.call(fn, [builder.trunc(values[1], i8), builder.trunc(values[2], i8), *values[3:6],
                          ir.Constant(f32, 1.0), at[0], values[7], at[1], values[9],
                          ir.Constant(f32, 0.0), at[2], values[11]])
        return context.get_dummy_value()

    return types.void(*[types.int64] * 12), codegen


@intrinsic
def _set_int(typingctx, address, value):
    """The C function ``void f(int)`` at ``address``."""
    def codegen(context, builder, signature, values):
        fnty = ir.FunctionType(ir.VoidType(), [ir.IntType(32)])
        fn = builder.inttoptr(values[0], fnty.as_pointer())
        builder.call(fn, [builder.trunc(values[1], ir.IntType(32))])
        return context.get_dummy_value()

    return types.void(types.int64, types.int64), codegen


@intrinsic
def _get_int(typingctx, address):
    """The C function ``int f(void)`` at ``address``."""
    def codegen(context, builder, signature, values):
        fn = builder.inttoptr(values[0], ir.FunctionType(ir.IntType(32), []).as_pointer())
        return builder.sext(builder.call(fn, []), ir.IntType(64))

    return types.int64(types.int64), codegen


@njit(nogil=True, cache=True)
def _gemm(args, transa, transb, m, n, k, a, lda, b, ldb, c, ldc, scratch):
    """Column-major c (m×n) = op(a)·op(b) by the header's BLAS. oneDNN's row-major call
    computes cᵀ = op(b)ᵀ·op(a)ᵀ on as many threads as the calling thread's OpenMP count: one
    here (the worker never runs Python to set it), and the count put back after, as another
    library sharing the OpenMP runtime (PyTorch's build links the same libgomp) set it."""
    if args[_KIND] == _ROWS:
        threads = _get_int(args[_OMP_GET])
        _set_int(args[_OMP_SET], 1)
        _call_rows(args[_ROWS_AT], transb, transa, n, m, k, b, ldb, a, lda, c, ldc)
        _set_int(args[_OMP_SET], threads)
    else:
        blas_gemm(args[_KIND], transa, transb, m, n, k, args[_ONE], a, lda, b, ldb,
                  args[_ONE] + args[_ITEMSIZE], c, ldc, scratch)


#: what a job's part computes (the header's word after _HEADER): units of one product's
#: columns or rows, or whole products of a batch
_COLUMNS, _ROWS_OF_ONE, _BATCH = 0, 1, 2


@cfunc(_JOB_SIGNATURE, cache=True)
def _part(lo, hi, argp):
    """Part lo..hi of a GEMM job, one C function for both kinds (one compile):

    - _ROWS_OF_ONE or _COLUMNS: units lo..hi (of _BLOCK rows, or columns) of row-major c
      (m×n) = A @ B; after the kind, the bytes from one row of A, and from one column of
      B, to the next;
    - _BATCH: row-major c[i] (m×n, contiguous) = A_i @ B_i for i in lo..hi, as the
      column-major GEMM c[i]ᵀ = B_iᵀ·A_iᵀ; after the kind, a count, then each product's
      byte offset into a, then into b."""
    head = carray(argp, (_HEADER + 3,))
    m, n, itemsize, kind = head[_M], head[_N], head[_ITEMSIZE], head[_HEADER]
    scratch = np.empty(8, np.int64)
    if kind == _BATCH:
        count = head[_HEADER + 1]
        args = carray(argp, (_HEADER + 2 + 2 * count,))
        a_off, b_off = _HEADER + 2, _HEADER + 2 + count
        for i in range(lo, hi):
            _gemm(args, args[_FLAG_B], args[_FLAG_A], n, m, args[_K], args[_B] + args[b_off + i],
                  args[_LD_B], args[_A] + args[a_off + i], args[_LD_A],
                  args[_C] + i * m * n * itemsize, n, scratch)
        return
    step_a, step_b = head[_HEADER + 1], head[_HEADER + 2]
    lo, hi = lo * _BLOCK, min(hi * _BLOCK, m if kind == _ROWS_OF_ONE else n)
    if kind == _ROWS_OF_ONE:
        _gemm(head, head[_FLAG_B], head[_FLAG_A], n, hi - lo, head[_K], head[_B], head[_LD_B],
              head[_A] + lo * step_a, head[_LD_A], head[_C] + lo * n * itemsize, n, scratch)
    else:
        _gemm(head, head[_FLAG_B], head[_FLAG_A], hi - lo, m, head[_K], head[_B] + lo * step_b,
              head[_LD_B], head[_A], head[_LD_A], head[_C] + lo * itemsize, n, scratch)


def _operand(x: np.ndarray) -> tuple[int, int] | None:
    """(transpose letter, leading dimension) of a matrix as the column-major GEMM reads its
    transpose, or None when neither of its axes is contiguous."""
    rows, cols = x.shape[-2:]
    row_step, col_step = (s // x.itemsize for s in x.strides[-2:])
    if col_step == 1 and row_step >= cols:
        return ord("N"), row_step
    if row_step == 1 and col_step >= rows:
        return ord("T"), col_step
    return None


def _as_rows(a: np.ndarray) -> np.ndarray | None:
    """a[..., M, K] as one [rows, K] matrix without a copy, or None."""
    if a.ndim == 2:
        return a
    try:
        return np.reshape(a, (-1, a.shape[-1]), copy=False)
    except ValueError:
        return None


#: a GEMM's split (job, units, work) and result shape by what its job encodes but the
#: result's address: the operands' addresses, shapes, strides and dtype, and the layout of
#: the array given to write into (None: a fresh one). A training loop's weights and planned
#: buffers are the same memory every step, where building the job took ~50 µs of each GEMM
#: of a GPT config M step (Python run after the GEMM before it had evicted it from the
#: caches). The same key is the same computation, whatever array now holds the memory.
_SPLITS: dict = {}
_SPLITS_MAX = 4096


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray | None:
    """a @ b (into ``out``, C-contiguous, when given), or None where this path does not
    apply (the caller then runs NumPy's)."""
    key = (data_address(a), a.shape, a.strides, a.dtype, data_address(b), b.shape, b.strides,
           b.dtype, None if out is None else (out.shape, out.strides, out.dtype))
    known = _SPLITS.get(key)
    if known is None:
        return _first(a, b, out, key)
    job, units, work, least, shape = known
    if out is None:  # owns its memory: the executor may write a later result into it
        out = np.empty(shape, a.dtype)
    args = job.args.copy()
    args[_C] = data_address(out)
    with one_thread():
        split(CompiledJob(job.address, args), units, work, min_work=SPLIT_MIN, least=least)
    return out


def _first(a: np.ndarray, b: np.ndarray, out: np.ndarray | None, key: tuple
           ) -> np.ndarray | None:
    """``matmul`` for operands not seen before in this layout (its split then remembered)."""
    if (a.ndim < 2 or b.ndim < 2 or a.dtype != b.dtype or a.dtype not in (np.float32, np.float64)
            or min(*a.shape[-2:], b.shape[-1]) < 2):
        return None
    if bind() is None:
        return None
    lead = a.shape[:-2] if b.ndim == 2 else np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a_rows = _as_rows(a) if b.ndim == 2 or math.prod(b.shape[:-2]) == 1 else None
    with one_thread():
        if a_rows is None:
            return _batch(a, b, lead, out)
        if out is None:
            out = np.empty(lead + (a.shape[-2], b.shape[-1]), a.dtype)
        parts = _one(a_rows, b.reshape(b.shape[-2:]), out.reshape(a_rows.shape[0], -1))
        if parts is None:
            return None
        if len(_SPLITS) >= _SPLITS_MAX:
            _SPLITS.clear()
        _SPLITS[key] = (*parts, out.shape)
        job, units, work, least = parts
        split(job, units, work, min_work=SPLIT_MIN, least=least)
        return out


def batch_offsets(lead: tuple, *strides: tuple) -> np.ndarray:
    """[len(strides), prod(lead)]: the byte offset of each matrix of the batch ``lead`` in
    each array, given the arrays' strides (over the leading axes; 0 along a broadcast one)."""
    index = np.indices(lead).reshape(len(lead), math.prod(lead))
    return np.array([(np.array(st[:len(lead)], np.int64)[:, None] * index).sum(0)
                     for st in strides], np.int64).reshape(len(strides), -1)


def _one(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> tuple | None:
    """``split``'s (job, units, work, least) for out (contiguous) = a @ b over the cores; None
    when an operand has no contiguous axis."""
    read_a, read_b = _operand(a), _operand(b)
    if read_a is None or read_b is None:
        return None
    (m, k), n = a.shape, b.shape[1]
    row_a = read_a[1] if read_a[0] == ord("N") else 1  # elements from one row of A to the next
    col_b = 1 if read_b[0] == ord("N") else read_b[1]
    by_rows = m >= n
    header = _header(a, b, out, m, n, k, read_a, read_b)
    job = CompiledJob(_part.address, header + [_ROWS_OF_ONE if by_rows else _COLUMNS,
                                                row_a * a.itemsize, col_b * a.itemsize])
    least = _ROWS_LEAST if header[_KIND] == _ROWS else 1
    return job, -(-(m if by_rows else n) // _BLOCK), m * n * k, least


def _batch(a: np.ndarray, b: np.ndarray, lead: tuple, out: np.ndarray | None
           ) -> np.ndarray | None:
    count = math.prod(lead)
    a, b = np.broadcast_to(a, lead + a.shape[-2:]), np.broadcast_to(b, lead + b.shape[-2:])
    read_a, read_b = _operand(a), _operand(b)
    if read_a is None or read_b is None or count < 1:
        return None
    m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
    out = np.empty(lead + (m, n), a.dtype) if out is None else out
    if count < cores() and m * n * k >= SPLIT_MIN:  # too few products to share: split each
        for i in np.ndindex(lead):
            job, units, work, least = _one(a[i], b[i], out[i])
            split(job, units, work, min_work=SPLIT_MIN, least=least)
        return out
    job = CompiledJob(_part.address, np.concatenate([
        _header(a, b, out, m, n, k, read_a, read_b), [_BATCH, count],
        batch_offsets(lead, a.strides, b.strides).ravel()]))
    split(job, count, count * m * n * k, min_work=SPLIT_MIN)
    return out
