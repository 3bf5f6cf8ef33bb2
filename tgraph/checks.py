"""``check_op(name)``: does an op keep its promises? For each of its ``examples(rng)``:

1. the shape rule agrees with what the kernel returns (dtype and shape), on each backend;
2. the VJP rule, run through ``grad`` as graph ops, agrees with central finite differences
   in float64 of a random linear function of the outputs.

Works for any registered op, a user's custom op included (``tgraph ops --check NAME``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tgraph.errors import TGraphError
from tgraph.ir import Graph
from tgraph.shapes import fmt_shape


@dataclass
class CaseResult:
    index: int
    inputs: str
    attrs: dict
    problems: list[str] = field(default_factory=list)
    grad_error: float | None = None  # worst |analytic − numeric| / (atol + rtol·|numeric|)

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        attrs = " ".join(f"{k}={v}" for k, v in self.attrs.items())
        head = f"case {self.index}: {self.inputs} {attrs}".rstrip()
        if self.problems:
            return head + "\n" + "\n".join(f"    FAIL {p}" for p in self.problems)
        grad = "not checked" if self.grad_error is None else f"ok (error {self.grad_error:.2g})"
        return f"{head}: shapes ok, gradient {grad}"


@dataclass
class CheckReport:
    op: str
    backends: tuple
    cases: list[CaseResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.cases) and all(c.ok for c in self.cases)

    def __str__(self) -> str:
        verdict = "ok" if self.ok else "FAILED"
        lines = [f"check_op {self.op} on {', '.join(self.backends)}: {verdict}"]
        lines += [f"  {c}" for c in self.cases] + [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def check_op(name: str, backends=("numpy",), seed: int = 0, eps: float = 1e-6,
             rtol: float = 1e-5, atol: float = 1e-6) -> CheckReport:
    """Check op ``name`` on its examples; ``report.ok`` says whether all passed."""
    from tgraph.ops.registry import get_op

    opdef = get_op(name)
    report = CheckReport(name, tuple(backends))
    rng = np.random.default_rng(seed)
    cases = opdef.examples(rng)
    if not cases:
        report.notes.append("the op has no examples: give it examples(rng) to check it")
    if not opdef.has_vjp:
        report.notes.append("the op has no VJP: gradients not checked")
    for i, (arrays, attrs) in enumerate(cases):
        arrays = [np.asarray(a) for a in arrays]
        case = CaseResult(i, ", ".join(f"{a.dtype}[{fmt_shape(a.shape)}]" for a in arrays),
                          attrs)
        report.cases.append(case)
        try:
            _check_case(name, opdef, arrays, attrs, backends, case, rng, (eps, rtol, atol))
        except TGraphError as e:
            case.problems.append(str(e))
    return report


def _one_node_graph(name, arrays, attrs) -> tuple[Graph, list]:
    g = Graph(f"check_{name}")
    ins = [g.input(f"x{i}", a.shape, str(a.dtype)) for i, a in enumerate(arrays)]
    out = g.apply(name, ins, attrs)
    outs = list(out) if isinstance(out, tuple) else [out]
    for j, v in enumerate(outs):
        g.set_output(f"y{j}", v)
    return g, outs


def _check_case(name, opdef, arrays, attrs, backends, case, rng, tols) -> None:
    from tgraph.execute import Executable

    g, outs = _one_node_graph(name, arrays, attrs)
    feeds = {f"x{i}": a for i, a in enumerate(arrays)}
    reference = None
    for backend in backends:
        got = Executable(g, backend, check=True).run(feeds)  # check: shape rule vs kernel
        if reference is None:
            reference = got
        for k, a in got.items():
            with np.errstate(invalid="ignore"):  # −inf − −inf in masked outputs
                same = np.allclose(a, reference[k], rtol=1e-6, atol=1e-9, equal_nan=True)
            if not same:
                case.problems.append(f"{backend} output {k} differs from {backends[0]}'s")
    float_in = [f"x{i}" for i, a in enumerate(arrays) if a.dtype.kind == "f"]
    float_out = [j for j, v in enumerate(outs) if v.dtype.startswith("float")]
    if not (opdef.has_vjp and float_in and float_out):
        return
    weights = {j: rng.standard_normal(reference[f"y{j}"].shape) for j in float_out}
    numeric = _numeric_grads(Executable(g), weights, float_in, feeds, tols[0])
    grad_graph = _grad_graph(name, arrays, attrs, weights, float_in)
    for backend in backends:
        analytic = Executable(grad_graph, backend).run(feeds)
        for x in float_in:
            a, n = analytic[f"grad/{x}"], numeric[x]
            err = float(np.max(np.abs(a - n) / (tols[2] + tols[1] * np.abs(n)), initial=0))
            case.grad_error = max(case.grad_error or 0.0, err)
            if not err <= 1:
                worst = np.unravel_index(np.nanargmax(np.abs(a - n)), a.shape) if a.size else ()
                case.problems.append(
                    f"{backend}: gradient of {x} differs from finite differences at "
                    f"{tuple(map(int, worst))}: {a[worst]:.6g} vs {n[worst]:.6g}")


def _grad_graph(name, arrays, attrs, weights, float_in) -> Graph:
    """The graph of d/dx Σ_j Σ w_j·y_j through the autodiff pass."""
    from tgraph import builder as tb
    from tgraph.autodiff import grad
    from tgraph.passes import dce

    g, outs = _one_node_graph(name, arrays, attrs)
    terms = [tb.sum(outs[j] * g.const(w, f"w{j}", outs[j].dtype)) for j, w in weights.items()]
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    g.set_output("loss", total)
    gg = grad(g, "loss", wrt=float_in)
    gg.outputs = {f"grad/{x}": gg.outputs[f"grad/{x}"] for x in float_in}
    dce(gg)  # the loss itself may be −inf·w: not needed, not computed
    return gg


def _numeric_grads(ex, weights, float_in, feeds, eps) -> dict:
    def f(fs) -> float:
        out = ex.run(fs)
        return sum(float(np.sum(np.where(np.isfinite(y), y * w, 0)))
                   for y, w in ((out[f"y{j}"], w) for j, w in weights.items()))

    grads = {}
    for x in float_in:
        base = feeds[x]
        d = np.zeros(base.shape)
        for k in np.ndindex(base.shape):
            shifted = []
            for sign in (1, -1):
                a = base.copy()
                a[k] += sign * eps
                shifted.append(f({**feeds, x: a}))
            d[k] = (shifted[0] - shifted[1]) / (2 * eps)
        grads[x] = d
    return grads
