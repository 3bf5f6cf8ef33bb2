"""CuPy overrides for the few ops where the shared ``xp`` kernel leaves speed on the table.

The registry's kernels already run on CuPy unchanged; these replace them only where one
fused launch does the work of many (each elementwise step of the generic softmax, layernorm
or GELU is its own kernel and its own trip through device memory). Anything outside a fast path (other axes or dtypes, empty arrays) falls back
to the registry's kernel, so results never depend on which path ran. Imported only once
the backend has found a working device.
"""

from __future__ import annotations

import cupy
import numpy as np

from tgraph.ops.registry import get_op

_FAST_DTYPES = (np.dtype("float32"), np.dtype("float64"))

# One thread block per row of the last axis; a tree reduction in shared memory gives the
# row's max / sum to every thread. blockDim is a power of two, at most 1024.
_ROW_KERNELS = r"""
struct MaxOp { template <typename T> __device__ T operator()(T a, T b) const { return a > b ? a : b; } };
struct SumOp { template <typename T> __device__ T operator()(T a, T b) const { return a + b; } };

template <typename T, typename Op>
__device__ T block_reduce(T v, T* sh, Op op) {
    const unsigned int t = threadIdx.x;
    sh[t] = v;
    __syncthreads();
    for (unsigned int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (t < s) sh[t] = op(sh[t], sh[t + s]);
        __syncthreads();
    }
    T r = sh[0];
    __syncthreads();  // sh is reused by the caller's next reduction
    return r;
}

// Same numbers as the registry's softmax: subtract the row max (0 when it is not finite,
// so an all -inf row gives exp(-inf) = 0), and divide by 1 where the sum is 0.
template <typename T>
__global__ void softmax_rows(const T* x, T* y, long long n) {
    __shared__ T sh[1024];
    const T* xr = x + (long long)blockIdx.x * n;
    T* yr = y + (long long)blockIdx.x * n;
    T m = xr[0];
    for (long long j = threadIdx.x; j < n; j += blockDim.x) m = MaxOp()(m, xr[j]);
    m = block_reduce(m, sh, MaxOp());
    if (!isfinite(m)) m = 0;
    T s = 0;
    for (long long j = threadIdx.x; j < n; j += blockDim.x) s += exp(xr[j] - m);
    s = block_reduce(s, sh, SumOp());
    const T d = s == 0 ? T(1) : s;
    for (long long j = threadIdx.x; j < n; j += blockDim.x) yr[j] = exp(xr[j] - m) / d;
}

// Two passes over the row (mean, then variance of the centred values), as the registry does.
template <typename T>
__global__ void layernorm_rows(const T* x, const T* g, const T* b, T* y, long long n, T eps) {
    __shared__ T sh[1024];
    const T* xr = x + (long long)blockIdx.x * n;
    T* yr = y + (long long)blockIdx.x * n;
    T s = 0;
    for (long long j = threadIdx.x; j < n; j += blockDim.x) s += xr[j];
    const T mu = block_reduce(s, sh, SumOp()) / T(n);
    T q = 0;
    for (long long j = threadIdx.x; j < n; j += blockDim.x) { T c = xr[j] - mu; q += c * c; }
    const T r = T(1) / sqrt(block_reduce(q, sh, SumOp()) / T(n) + eps);
    for (long long j = threadIdx.x; j < n; j += blockDim.x) yr[j] = (xr[j] - mu) * r * g[j] + b[j];
}
"""

_NAMES = [f"{k}<{t}>" for k in ("softmax_rows", "layernorm_rows") for t in ("float", "double")]
_module = cupy.RawModule(code=_ROW_KERNELS, options=("-std=c++14",), name_expressions=_NAMES)
_CTYPE = {np.dtype("float32"): "float", np.dtype("float64"): "double"}


def softmax(xp, x, axis=-1):
    if x.dtype not in _FAST_DTYPES or x.size == 0 or axis not in (-1, x.ndim - 1):
        return get_op("softmax").kernel(xp, x, axis=axis)
    x = cupy.ascontiguousarray(x)
    y = cupy.empty_like(x)
    n = x.shape[-1]
    _row_kernel("softmax_rows", x)((x.size // n,), (_threads(n),), (x, y, np.int64(n)))
    return y


def layernorm(xp, x, g, b, eps=1e-5):
    if x.dtype not in _FAST_DTYPES or x.size == 0:
        return get_op("layernorm").kernel(xp, x, g, b, eps=eps)
    x, g, b = (cupy.ascontiguousarray(a) for a in (x, g, b))
    y = cupy.empty_like(x)
    n = x.shape[-1]
    _row_kernel("layernorm_rows", x)((x.size // n,), (_threads(n),),
                                     (x, g, b, y, np.int64(n), x.dtype.type(eps)))
    return y


def _row_kernel(name: str, x):
    return _module.get_function(f"{name}<{_CTYPE[x.dtype]}>")


def _threads(n: int) -> int:
    """A power of two (the tree reduction needs one) covering the row, 32 to 1024."""
    return min(1024, max(32, 1 << (n - 1).bit_length()))


# x·½·erfc(−x/√2), not ½·x·(1 + erf(x/√2)), which cancels in the negative tail
_gelu_exact = cupy.ElementwiseKernel(
    "T x", "T y", "y = T(0.5) * x * erfc(x * T(-0.7071067811865476))", "tgraph_gelu")
_gelu_tanh = cupy.ElementwiseKernel(
    "T x", "T y",
    "y = T(0.5) * x * (T(1) + tanh(T(0.7978845608028654) * (x + T(0.044715) * x * x * x)))",
    "tgraph_gelu_tanh")


def gelu(xp, x, approximate="none"):
    if x.dtype not in _FAST_DTYPES:
        return get_op("gelu").kernel(xp, x, approximate=approximate)
    return (_gelu_tanh if approximate == "tanh" else _gelu_exact)(x)


KERNELS = {"softmax": softmax, "layernorm": layernorm, "gelu": gelu}
