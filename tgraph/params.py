"""Parameter initialisation from each parameter's ``init`` spec, reproducible by seed."""

from __future__ import annotations

import math

import numpy as np

from tgraph.errors import TGraphError
from tgraph.ir import Graph

DISTS = {"normal": "std", "uniform": "limit", "zeros": None, "ones": None}
SCALE_MAX = 1e6  # a std or limit beyond this is a typo, and 1e308 overflows to inf


def init_problem(spec) -> str | None:
    """What is wrong with an init spec, in words ("a ... spec"); None when it is valid."""
    what = ('an init spec: {"dist": "normal", "std": s}, {"dist": "uniform", "limit": a}, '
            '{"dist": "zeros"} or {"dist": "ones"} with 0 ≤ s, a ≤ 1e6')
    if not isinstance(spec, dict) or not isinstance(spec.get("dist", "normal"), str) \
            or spec.get("dist", "normal") not in DISTS:
        return what
    scale = DISTS[spec.get("dist", "normal")]
    if set(spec) - {"dist", scale}:
        return what
    x = spec.get(scale, 0.0) if scale else 0.0
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not (
            math.isfinite(x) and 0 <= x <= SCALE_MAX):
        return what
    return None


def init_params(graph: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    """Fresh weights for every parameter. Specs: {"dist": "normal", "std": s},
    {"dist": "uniform", "limit": a}, {"dist": "zeros"}, {"dist": "ones"}."""
    from tgraph.budget import check_bytes, nbytes
    from tgraph.shapes import fmt_shape

    total = 0
    for p in graph.params:
        if any(not isinstance(d, int) for d in p.shape):
            raise TGraphError(f"parameter {p.name!r} has symbolic shape {fmt_shape(p.shape)}")
        total += nbytes(p.shape, np.dtype(p.dtype).itemsize)
        check_bytes(total, f"the parameters (up to {p.name!r} {p.type})")
    rng = np.random.default_rng(seed)
    out = {}
    for p in graph.params:
        spec = p.init or {"dist": "normal", "std": 0.02}
        problem = init_problem(spec)
        if problem:
            raise TGraphError(f"parameter {p.name!r}: init must be {problem}")
        dist, shape = spec.get("dist", "normal"), tuple(p.shape)
        if dist == "normal":
            a = rng.normal(0.0, spec.get("std", 0.02), shape)
        elif dist == "uniform":
            lim = spec.get("limit", 0.05)
            a = rng.uniform(-lim, lim, shape)
        elif dist == "zeros":
            a = np.zeros(shape)
        elif dist == "ones":
            a = np.ones(shape)
        else:
            raise TGraphError(f"parameter {p.name!r}: unknown init {dist!r}")
        out[p.name] = a.astype(p.dtype)
    return out


def pack_params(graph: Graph, params: dict) -> dict:
    """``params`` (NumPy arrays) laid out for ``graph``: the parameters a concat joins (the
    heads' projections that -O2 merges into one GEMM) copied once into one array, in the
    concat's order, each now a view of it, so that the concat is a view each run and not a
    copy (gpt2-small's forward at -O2 copied 7 MB a layer so: 11.8 ms of 220). Values and
    dtypes are the graph's; every other entry is the caller's own array. A parameter two
    concats join stays in the last one's array: the other then copies, as before."""
    from tgraph.ir import PARAM

    out = dict(params)
    for n in graph.nodes:
        group = n.inputs
        if (n.op != "concat" or len(group) < 2 or len({v.name for v in group}) < len(group)
                or any(v.kind != PARAM or v.name not in params for v in group)):
            continue
        axis = n.attrs.get("axis", 0) % group[0].type.rank
        joined = np.concatenate([np.asarray(params[v.name], v.dtype) for v in group], axis)
        lo = 0
        for v in group:
            hi = lo + out[v.name].shape[axis]
            out[v.name] = joined[(slice(None),) * axis + (slice(lo, hi),)]
            lo = hi
    return out
