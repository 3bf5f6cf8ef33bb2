"""The ``fused`` op: a chain of elementwise ops that the fusion pass (tgraph/passes/fuse.py)
grouped into one node, holding its subgraph as plain JSON data in its attrs.

    attrs = {"body": [{"op": "add", "args": [0, 1], "attrs": {}},
                      {"op": "gelu", "args": [2], "attrs": {"approximate": "none"}}],
             "outputs": [3]}

An argument is an int (0..n-1: the node's inputs, n+k: body entry k's result) or
``{"value": number, "dtype": name}`` (a scalar constant, inlined). The registry kernel
evaluates the body op by op with each op's own kernel: the unfused reference, and the
CuPy path. Backends with a code generator (NumPy: tgraph/codegen) run one compiled loop
instead. The VJP re-emits the body as graph ops and differentiates it, so autodiff sees
through a fused node.
"""

from __future__ import annotations

import numpy as np

from tgraph.errors import ShapeError
from tgraph.ir import infer_types
from tgraph.ops.registry import OpDef, get_op, register_op
from tgraph.types import TensorType


def body_refs(attrs: dict, n_inputs: int) -> None:
    """Reject a body whose references point forward, out of range, or to unknown ops."""
    body, outputs = attrs.get("body"), attrs.get("outputs")
    if not isinstance(body, list) or not body or not isinstance(outputs, list) or not outputs:
        raise ShapeError("fused needs a non-empty body and outputs")
    for k, entry in enumerate(body):
        if not isinstance(entry, dict) or not isinstance(entry.get("op"), str):
            raise ShapeError(f"fused body entry {k} is not {{op, args, attrs}}")
        get_op(entry["op"])
        for a in entry.get("args", ()):
            _check_ref(a, n_inputs + k, f"body entry {k} ({entry['op']})")
    for a in outputs:
        _check_ref(a, n_inputs + len(body), "outputs")
        if isinstance(a, dict):
            raise ShapeError("fused outputs must be references, not constants")


def _check_ref(a, limit: int, where: str) -> None:
    if isinstance(a, dict):
        if not isinstance(a.get("value"), (int, float, bool)) or not isinstance(
                a.get("dtype"), str):
            raise ShapeError(f"fused {where}: a constant needs a number value and a dtype")
        return
    if not isinstance(a, int) or isinstance(a, bool) or not 0 <= a < limit:
        raise ShapeError(f"fused {where}: argument {a!r} refers to nothing before it")


class _Probe:
    """Just enough of a Node for ``infer_types``: the shape rules of the body's ops."""

    def __init__(self, op, types, attrs, index):
        self.op, self.attrs = op, attrs
        self.inputs = [type("V", (), {"type": t})() for t in types]
        self.name, self.scope, self.index = f"fused body entry {index}", "", index

    def where(self):
        return f"{self.op} ({self.name})"


def const_type(a: dict) -> TensorType:
    return TensorType(a["dtype"], ())


def body_types(types, body) -> list[TensorType]:
    """The types of the node's inputs followed by those of each body entry's result."""
    env = list(types)
    for k, entry in enumerate(body):
        arg_types = [const_type(a) if isinstance(a, dict) else env[a]
                     for a in entry.get("args", ())]
        (t,) = infer_types(get_op(entry["op"]), _Probe(entry["op"], arg_types,
                                                      entry.get("attrs", {}), k))
        env.append(t)
    return env


@register_op
class Fused(OpDef):
    """Elementwise ops fused into one loop (made by -O2); its body is the unfused chain."""

    fresh_result = True

    name = "fused"
    signature = "fused(*inputs, body, outputs) -> outputs of the body"

    def infer(self, types, body, outputs):
        body_refs({"body": body, "outputs": outputs}, len(types))
        env = body_types(types, body)
        return [env[a] for a in outputs]

    def kernel(self, xp, *arrays, body, outputs, rule="kernel"):
        env = list(arrays)
        for entry in body:
            args = [xp.asarray(np.asarray(a["value"], a["dtype"])) if isinstance(a, dict)
                    else env[a] for a in entry.get("args", ())]
            op = get_op(entry["op"])
            fn = getattr(op, rule) or op.kernel
            env.append(fn(xp, *args, **entry.get("attrs", {})))
        res = tuple(env[a] for a in outputs)
        return res[0] if len(res) == 1 else res

    def jax_kernel(self, jnp, *arrays, body, outputs):
        """The body op by op with each op's JAX rule: XLA fuses it again its own way."""
        return self.kernel(jnp, *arrays, body=body, outputs=outputs, rule="jax_kernel")

    def vjp(self, node, grads):
        from tgraph.autodiff import vjp_of_expansion

        g = node.outputs[0].graph

        def body(*inputs):
            env = list(inputs)
            for entry in node.attrs["body"]:
                args = [g.const(a["value"], "scalar", a["dtype"]) if isinstance(a, dict)
                        else env[a] for a in entry.get("args", ())]
                env.append(g.apply(entry["op"], args, entry.get("attrs", {})))
            return [env[a] for a in node.attrs["outputs"]]

        return vjp_of_expansion(node, grads, body)

    def examples(self, rng):
        """bias + GELU, times x, with a row mean as a second output."""
        body = [{"op": "add", "args": [0, 1], "attrs": {}},
                {"op": "gelu", "args": [2], "attrs": {"approximate": "none"}},
                {"op": "mul", "args": [3, 0], "attrs": {}},
                {"op": "mean", "args": [4], "attrs": {"axes": [-1], "keepdims": True}}]
        return [([rng.standard_normal((2, 3, 4)), rng.standard_normal(4)],
                 {"body": body, "outputs": [4, 5]})]

    def flops(self, in_shapes, out_shapes, body, outputs):
        return len(body) * max(int(np.prod(s)) for s in out_shapes)

    def label(self, body, outputs):
        return "fused: " + " → ".join(get_op(e["op"]).label(**e.get("attrs", {})) for e in body)
