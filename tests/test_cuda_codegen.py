"""The CuPy code generator's C printer, checked without a GPU: every op's scalar formula and
some fused chains are printed as the ElementwiseKernel body CuPy would compile, wrapped in a
C++ loop, built with the host's C++ compiler and run on the same inputs as the registry
kernels (float64: agreement to a few ulps). On a GPU, test_gpu.py runs the kernels."""

from __future__ import annotations

import ctypes
import math
import shutil
import subprocess
import zlib

import numpy as np
import pytest

from tgraph.codegen.cuda import Untranslatable, c_expr, elementwise_parts
from tgraph.ops.registry import all_ops, get_op

CXX = shutil.which("c++") or shutil.which("g++")
pytestmark = pytest.mark.skipif(CXX is None, reason="no C++ compiler to check the printed C")
_C = {"float64": "double", "float32": "float", "bool": "bool", "int64": "long long"}


def single_op_cases():
    cases = []
    for name, op in sorted(all_ops().items()):
        rng = np.random.default_rng(zlib.crc32(name.encode()))  # another op's cases move nothing
        for arrays, attrs in (op.examples(rng) if hasattr(op, "examples") else [])[:1]:
            if op.scalar([f"a{i}" for i in range(len(arrays))], **attrs) is None:
                continue
            arrays = [np.asarray(a) for a in arrays]
            body = [{"op": name, "args": list(range(len(arrays))), "attrs": attrs}]
            cases.append((name, body, arrays))
    return cases


def chain_cases():
    rng = np.random.default_rng(1)
    x, b = rng.standard_normal((5, 7)) * 3, rng.standard_normal(7)
    gelu = [{"op": "add", "args": [0, 1], "attrs": {}},
            {"op": "gelu", "args": [2], "attrs": {"approximate": "none"}},
            {"op": "mul", "args": [3, {"value": 0.5, "dtype": "float64"}], "attrs": {}}]
    switch = [{"op": "compare", "args": [0, {"value": 0.0, "dtype": "float64"}],
               "attrs": {"cmp": ">"}},
              {"op": "tanh", "args": [0], "attrs": {}},
              {"op": "where", "args": [1, 2, {"value": float("-inf"), "dtype": "float64"}],
               "attrs": {}}]
    return [("bias+gelu×½", gelu, [x, b]), ("where(x>0, tanh x, -inf)", switch, [x])]


def reference(body, arrays):
    env = list(arrays)
    for e in body:
        args = [np.asarray(a["value"], a["dtype"]) if isinstance(a, dict) else env[a]
                for a in e["args"]]
        env.append(get_op(e["op"]).kernel(np, *args, **e.get("attrs", {})))
    return env[-1]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """One shared library with a loop per case: name -> (function, inputs, reference)."""
    cases = single_op_cases() + chain_cases()
    src = ["#include <math.h>", "#include <cmath>", "using std::isnan; using std::isinf;",
           "using std::isfinite;",  # CUDA's normcdf (Φ), which the host's libm lacks:
           f"static double normcdf(double x) {{ return 0.5 * erfc(x * {-1 / math.sqrt(2)!r}); }}"]
    for k, (name, body, arrays) in enumerate(cases):
        want = reference(body, arrays)
        dtypes = [str(a.dtype) for a in arrays]
        ins, outs, text = elementwise_parts({"body": body, "outputs": [len(arrays) + len(body) - 1]},
                                            dtypes, [str(want.dtype)])
        params = ", ".join([f"const {_C[d]}* p{i}" for i, d in enumerate(dtypes)]
                           + [f"{_C[str(want.dtype)]}* q0"])
        reads = " ".join(f"{_C[d]} in{i} = p{i}[i];" for i, d in enumerate(dtypes))
        src.append(f'extern "C" void case{k}(long n, {params}) {{\n'
                   f"  for (long i = 0; i < n; ++i) {{ {reads} {_C[str(want.dtype)]} out0;\n"
                   f"{text}\n  q0[i] = out0; }}\n}}")
    folder = tmp_path_factory.mktemp("cuda_c")
    (folder / "k.cpp").write_text("\n".join(src))
    subprocess.run([CXX, "-O1", "-shared", "-fPIC", "-o", str(folder / "k.so"),
                    str(folder / "k.cpp")], check=True, capture_output=True, text=True)
    lib = ctypes.CDLL(str(folder / "k.so"))
    return {name: (getattr(lib, f"case{k}"), arrays, reference(body, arrays))
            for k, (name, body, arrays) in enumerate(cases)}


def run_case(fn, arrays, want):
    flat = [np.ascontiguousarray(a) for a in np.broadcast_arrays(*arrays)]
    out = np.empty(want.shape, want.dtype)
    fn(ctypes.c_long(out.size), *[a.ctypes.data_as(ctypes.c_void_p) for a in flat],
       out.ctypes.data_as(ctypes.c_void_p))
    return out


def test_every_op_with_a_formula_prints_as_c_that_computes_it(compiled):
    names = {n for n, _, _ in single_op_cases()}
    assert {"add", "exp", "gelu", "gelu_grad", "where", "compare", "maximum"} <= names
    for name in names:
        fn, arrays, want = compiled[name]
        np.testing.assert_allclose(run_case(fn, arrays, want), want, rtol=4e-15,
                                   atol=_cancelling(name, arrays), err_msg=name)


def _cancelling(name: str, arrays) -> float:
    """An absolute error allowed where a formula subtracts near-equal terms: GELU′ = g·(Φ(x)
    + x·φ(x)) for x < 0, its terms each rounded (CUDA's normcdf is erfc's, the reference's
    ndtr is not) to a few u of their size."""
    if name != "gelu_grad":
        return 1e-300
    x, g = arrays
    terms = np.abs(g) * (0.5 * np.vectorize(math.erfc)(-x / math.sqrt(2)) + np.abs(x) * np.exp(-x * x / 2)
                         / math.sqrt(2 * math.pi))
    return float(8 * 2.0**-53 * terms.max())


@pytest.mark.parametrize("name", [n for n, _, _ in chain_cases()])
def test_fused_chains_with_inlined_constants(compiled, name):
    fn, arrays, want = compiled[name]
    np.testing.assert_allclose(run_case(fn, arrays, want), want, rtol=4e-15, atol=1e-300)


@pytest.mark.parametrize("formula", ["__import__('os').system('x')", "x.real", "[x]",
                                     "math.gamma(x)", "lambda: 1", "x; y"])
def test_anything_else_is_refused_not_printed(formula):
    with pytest.raises(Untranslatable):
        c_expr(formula)


def test_a_body_with_a_reduction_runs_op_by_op():
    body = [{"op": "exp", "args": [0], "attrs": {}},
            {"op": "sum", "args": [1], "attrs": {"axes": [-1], "keepdims": True}}]
    with pytest.raises(Untranslatable):
        elementwise_parts({"body": body, "outputs": [2]}, ["float32"], ["float32"])
