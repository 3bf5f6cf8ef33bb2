"""Row kernels: softmax, its gradient, the causal/window mask, the two as one, the
embedding gradient's scatter of rows, LayerNorm, its gradient, cross-entropy and its
gradient along the last axis, one Numba loop per row.

NumPy runs softmax as five passes over a [B, H, T, T] tensor (max, subtract, exp, sum,
divide), with a temporary for each; a row of attention scores fits in L1, so one loop that
reads it three times is what PyTorch's kernel does too. The source is written out and
cached like a fused kernel's (numba_cpu.load_source).

float32 softmax rows are computed in float32 as PyTorch's and XLA's are: the shift x − max,
vecmath32's exp and the row's sum (``ACC``, the accumulator type, is the dtype), 8 lanes an
AVX2 instruction (masked softmax of [8, 8, 128, 128]: 1.65 -> 0.82 ms on one core, against
a float64 shift and sum). What that costs in accuracy: a weight's relative error grows
from 4·u to about (3|d| + 6|max| + n + 12)·u, d = x − max and n the row's length (the
bound is derived in tests/test_cpu_kernels.py's softmax32_bound). float64 rows use libm's
exp and the reference's order of operations, so they agree with the registry kernel to
rounding. Cross-entropy's rows sum their exponentials in blocks of the dtype (below);
LayerNorm and the softmax gradient sum in float64 whatever the dtype.
"""

from __future__ import annotations

import functools
import textwrap

import numpy as np

from tgraph.codegen.entry import Entry
from tgraph.codegen.numba_cpu import (
    _VECMATH_VERSION,
    MATH_MODULES,
    entry_module,
    load_entry,
    load_source,
)

_HEADER = """import numpy as np
{math}
{exp_row}
from {tail_module} import exp as exp_tail
from tgraph.codegen.vecmath import maximum
ACC = np.{acc}
"""

# row r's exponentials e**(x − max) into out, their sum s, as ops/reduce.py's Softmax: a row
# with no finite maximum is shifted by 0, and a row whose exponentials sum to 0 (all -inf)
# divides by 1 (zeros)
_EXPONENTIALS = """m = x[r, 0]
for j in range(1, n):
    m = maximum(m, x[r, j])
m = m if np.isfinite(m) else ACC(0.0)
s = ACC(0.0)
for j in range(n):
    e = exp_row(x[r, j] - m)
    out[r, j] = e
    s += e
s = s if s != ACC(0.0) else ACC(1.0)
"""

SOFTMAX = """def kernel(r0, r1, x: "F 2d", out: "F 2d"):
    n = x.shape[1]
    for r in range(r0, r1):
""" + textwrap.indent(_EXPONENTIALS, " " * 8) + """        for j in range(n):
            out[r, j] = out[r, j] / s
"""

# ops/fused_grads.py's SoftmaxGrad: g·y − y·Σ(g·y)
SOFTMAX_GRAD = """def kernel(r0, r1, y: "F 2d", g: "F 2d", out: "F 2d"):
    n = y.shape[1]
    for r in range(r0, r1):
        s = 0.0
        for j in range(n):
            out[r, j] = g[r, j] * y[r, j]
            s += out[r, j]
        for j in range(n):
            out[r, j] = out[r, j] - y[r, j] * s
"""

# ops/masking.py's Mask without a keep input: query i (aligned to the last keys) keeps key j
# where j <= i (causal) and |j - i| <= window (window > 0)
MASK = """def kernel(r0, r1, x: "F 2d", out: "F 2d", t: int, causal: bool, window: int,
           fill: float):
    s = x.shape[1]
    for r in range(r0, r1):
        i = r % t + (s - t)
        for j in range(s):
            keep = (not causal or j <= i) and (window == 0 or abs(j - i) <= window)
            out[r, j] = x[r, j] if keep else fill
"""

# ops/masking.py's MaskedSoftmax: SOFTMAX of scale·x reading a masked key as −inf, so no
# scaled or masked copy of the scores is written and read back (scale > 0: the row's
# maximum is scale times x's). Columns 0..cols are written, every key the row sees lying
# below cols (the op: the whole row; attention.py: the keys its block of queries sees, a
# multiple of its block, so a causal product exponentiates a quarter fewer masked keys:
# one GPT config M layer 4 % faster forward, 2.5 % backward). The masked keys below cols
# are exponentiated too (to 0), and the maximum too reads every column below cols (a masked
# one as −inf), since a loop over a row's kept keys alone, of another length on every row,
# ran its scalar remainder more than its vector body and was no faster (the attention
# forward: 2.5 % faster over every column than over the kept keys, 80 interleaved rounds).
MASKED_SOFTMAX = """def kernel(r0, r1, x: "F 2d", out: "F 2d", t: int, causal: bool, window: int,
           scale: float, cols: int):
    s = x.shape[1]
    c = ACC(scale)
    for r in range(r0, r1):
        i = r % t + (s - t)
        lo = max(i - window, 0) if window > 0 else 0
        hi = min(i + 1, s) if causal else s
        hi = min(hi, i + window + 1) if window > 0 else hi
        m = ACC(-np.inf)
        for j in range(cols):  # over every column, masked ones as −inf: a vector loop
            m = maximum(m, x[r, j] if lo <= j < hi else ACC(-np.inf))
        m = m * c if np.isfinite(m) else ACC(0.0)
        z = ACC(0.0)
        for j in range(cols):
            e = exp_row(x[r, j] * c - m) if lo <= j < hi else ACC(0.0)
            out[r, j] = e
            z += e
        z = z if z != ACC(0.0) else ACC(1.0)
        for j in range(cols):
            out[r, j] = out[r, j] / z
"""

# LayerNorm's row statistics in one pass, summed in float64: mu, rstd = 1/√(variance + eps),
# and with ``{grad}`` also the means of ĝ = g·γ and of ĝ·x̂ (a, b). Sums of d = x − x[r, 0],
# not of x: a row far from 0 (|mean| ≫ σ) then cancels only as much as its first element
# lies from its mean, a few σ, where Σx² − (Σx)²/n would lose (mean/σ)² of its digits.
# One pass where there were two (three in the gradient): a float32 row is read once for
# them, and its elementwise pass then runs in float32 (ACC) with the statistics rounded to
# float32 once, as PyTorch's and XLA's do: GPT config M's [1024, 256] rows on one core,
# LayerNorm 116 -> 54 µs, its gradient 207 -> 130 µs.
_ROW_STATS = """first = x[r, 0]
s = 0.0
s2 = 0.0
{grad}for j in range(n):
    d = np.float64(x[r, j]) - first
    s += d
    s2 += d * d
{grad_sums}mu = s / n
rstd = 1.0 / math.sqrt(max(s2 / n - mu * mu, 0.0) + eps)
{grad_means}mu = mu + first
"""
_STATS = _ROW_STATS.format(grad="", grad_sums="", grad_means="")
_STATS_GRAD = _ROW_STATS.format(
    grad="sg = 0.0\nsgd = 0.0\n",
    grad_sums="    gh = np.float64(g[r, j] * gamma[j])\n    sg += gh\n    sgd += gh * d\n",
    grad_means="a = sg / n\nb = (sgd / n - a * mu) * rstd\n")

# ops/reduce.py's Layernorm
LAYERNORM = """def kernel(r0, r1, x: "F 2d", g: "F 1d", b: "F 1d", out: "F 2d", eps: float):
    n = x.shape[1]
    for r in range(r0, r1):
""" + textwrap.indent(_STATS, " " * 8) + """        m, k = ACC(mu), ACC(rstd)
        for j in range(n):
            out[r, j] = (x[r, j] - m) * k * g[j] + b[j]
"""

# ops/fused_grads.py's LayernormGrad: dx (plus a residual's gradient ``res``, with
# ``residual``: one loop for both, so a graph with either compiles it once), and chunk c's
# sums of g·x̂, g and dx (dγ's, dβ's and sum_dx's parts, float64) into part[c]; rows in
# chunks of ``chunk``, chunks c0..c1: a part per chunk, not per thread, so the sums are the
# same however the chunks are shared out. The residual's branch is outside the row's loop:
# inside it, as a select, the loop ran 1.45× as long.
_DX_LOOP = """for j in range(n):
    xh = (x[r, j] - m) * k
    d = {plus}(g[r, j] * gamma[j] - ma - xh * mb) * k
    dx[r, j] = d
    part[c, 0, j] += g[r, j] * xh
    part[c, 1, j] += g[r, j]
    part[c, 2, j] += d
"""
LAYERNORM_GRAD = """def kernel(c0, c1, x: "F 2d", gamma: "F 1d", g: "F 2d", res: "F 2d",
           residual: bool, dx: "F 2d", part: "float64 3d", chunk: int, eps: float):
    n = x.shape[1]
    for c in range(c0, c1):
        for j in range(n):
            part[c, 0, j] = 0.0
            part[c, 1, j] = 0.0
            part[c, 2, j] = 0.0
        for r in range(c * chunk, min(c * chunk + chunk, x.shape[0])):
""" + textwrap.indent(_STATS_GRAD, " " * 12) + """            m, k, ma, mb = ACC(mu), ACC(rstd), ACC(a), ACC(b)
            if residual:
""" + textwrap.indent(_DX_LOOP.format(plus="res[r, j] + "), " " * 16) + """            else:
""" + textwrap.indent(_DX_LOOP.format(plus=""), " " * 16)


# ops/reduce.py's CrossEntropy, per row: log Σ exp(x − max) + max − x[target]; the caller
# has checked every target is in [0, n) (this loop reads x[r, target] unchecked). The
# exponentials are summed CE_BLOCK at a time in the dtype (float32: vecmath32's exp, 8
# lanes), the blocks' sums in float64: a gpt2-small row of 50257 logits loses at most
# (CE_BLOCK − 1)·u to the float32 sums, not 50256·u. A block of fixed length, its tail apart:
# a loop whose bound is min(j0 + CE_BLOCK, n) did not vectorize; the tail (< CE_BLOCK
# terms) takes libm's exp, not an inlined one: 0.44 -> 0.32 s of compile time, which a cold
# -O2 pipeline pays. [128, 50257] on one core: 8.1 ms with vecmath's float64 exp, 5.4 ms so.
CE_BLOCK = 1024
CROSS_ENTROPY = """def kernel(r0, r1, x: "F 2d", targets: "int64 1d", out: "float64 1d"):
    n = x.shape[1]
    full = n - n % {block}
    for r in range(r0, r1):
        m = x[r, 0]
        for j in range(1, n):
            m = maximum(m, x[r, j])
        s = 0.0
        for j0 in range(0, full, {block}):
            part = ACC(0.0)
            for j in range(j0, j0 + {block}):
                part += exp_row(x[r, j] - m)
            s += part
        part = ACC(0.0)
        for j in range(full, n):
            part += exp_tail(x[r, j] - m)
        out[r] = math.log(s + part) + m - x[r, targets[r]]
""".replace("{block}", str(CE_BLOCK))


# ops/fused_grads.py's CrossEntropyGrad: SOFTMAX's rows, each scaled by c = g/N, the target's
# entry (y − 1)·c; the caller has checked every target is in [0, n). One pass over the
# logits where the closed form wrote a one-hot tensor, a softmax and their scaled difference.
CROSS_ENTROPY_GRAD = """def kernel(r0, r1, x: "F 2d", targets: "int64 1d", out: "F 2d", c: float):
    n = x.shape[1]
    c = ACC(c)
    for r in range(r0, r1):
""" + textwrap.indent(_EXPONENTIALS, " " * 8) + """        t = targets[r]
        hit = out[r, t] / s
        for j in range(n):
            out[r, j] = out[r, j] / s * c
        out[r, t] = (hit - ACC(1.0)) * c
"""

# ops/layout.py's ScatterAdd as np.add.at does it: updates added in their order (so the
# sums round alike), one output row at a time; the caller has checked every index is in
# [0, rows). One thread: two updates of one row must not race.
SCATTER_ROWS = """def kernel(r0, r1, upd: "F 2d", idx: "int64 1d", out: "F 2d"):
    n = upd.shape[1]
    for r in range(r0, r1):
        k = idx[r]
        for j in range(n):
            out[k, j] += upd[r, j]
"""


def _header(dtype) -> tuple[str, str, str]:
    """The module's imports and names for a loop in ``dtype``, its fastmath flags, and
    the versions of the math it inlines (part of the cache key)."""
    fast = np.dtype(dtype) == np.float32
    text = _HEADER.format(
        math="from tgraph.codegen import vecmath as math" if fast else "import math",
        exp_row=("from tgraph.codegen.vecmath32 import exp as exp_row" if fast
                 else "from math import exp as exp_row"),
        acc="float32" if fast else "float64", tail_module="numpy" if fast else "math")
    flags = '{"contract", "nsz", "arcp", "reassoc"}' if fast else "set()"
    versions = f"{_VECMATH_VERSION} {MATH_MODULES['f32'][1]}" if fast else ""
    return text, flags, versions


@functools.cache
def row_kernel(body: str, dtype) -> object:
    """The jitted loop, for other compiled code to call (attention's softmax rows)."""
    header, flags, versions = _header(dtype)
    text = (f"{header}from numba import njit\n\n\n"
            f"@njit(cache=True, nogil=True, error_model='numpy', fastmath={flags})\n{body}")
    return load_source(f"{text}\n{versions}", lambda: text).kernel


@functools.cache
def row_entry(body: str, dtype: np.dtype, imports: str = "") -> Entry:
    """The loop as a C entry point (entry.py), for ``split`` to run on any thread;
    ``imports``: lines that bring in the compiled functions it calls."""
    header, flags, versions = _header(dtype)
    text, params = entry_module(body, dtype, header, flags, imports)
    return load_entry((text, params), f"{text}\n{versions}")
