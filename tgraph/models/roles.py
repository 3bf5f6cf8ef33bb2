"""Ops chosen by name for a role in a model: the feed-forward ``activation`` and the
normalisation ``norm_op``. Any registered op fits a role, a plugin's too, when its shape
rule maps x (and the parameters it declares with ``OpDef.params``) to x's type:

    build_model("gpt", activation="swish", norm_op="my_rmsnorm")

The op's declared parameters are created in the current scope under the names it gives
(``decoder/layer_0/ln_1/gamma``), so weights files, ``info``, diagrams and autodiff see
ordinary parameters. ``replace_op`` (tgraph.passes) puts the same ops into a saved graph.
"""

from __future__ import annotations

from tgraph.errors import ShapeError, TGraphError, UnknownOpError
from tgraph.ir import Value
from tgraph.types import TensorType

#: names that stand for a built-in op with fixed attrs
ALIASES = {"gelu_tanh": ("gelu", {"approximate": "tanh"})}
#: the config key of each role, and what the role's op must do
ROLES = {"activation": "an activation", "norm_op": "a normalisation op"}


def resolve(name: str) -> tuple[str, dict]:
    """(op name, attrs) for an op name or an alias such as gelu_tanh."""
    return ALIASES.get(name, (name, {}))


def check(role: str, name: str, dtype: str = "float32") -> None:
    """Fail unless op ``name`` can fill ``role``: registered, and x [B, T, 8] (with its
    declared parameters) gives back x's type."""
    from tgraph.ops import get_op

    op, attrs = resolve(name)
    try:
        opdef = get_op(op)
    except UnknownOpError:
        raise TGraphError(f"config key {role!r}: no op named {name!r} is registered; give a "
                          "built-in op or load the plugin that registers it (--plugin "
                          "MODULE_OR_PATH)") from None
    x = TensorType(dtype, ("B", "T", 8))
    try:
        types = [x, *(TensorType(dtype, tuple(p.shape)) for p in opdef.params(x, **attrs))]
        out = opdef.infer(types, **attrs)
    except (ShapeError, ValueError, TypeError, KeyError, IndexError) as e:
        raise TGraphError(f"config key {role!r}: op {name!r} is not {ROLES[role]} that maps "
                          f"x {x} to its own type ({type(e).__name__}: {e})") from None
    if out != x:
        raise TGraphError(f"config key {role!r}: op {name!r} is not {ROLES[role]}: it maps "
                          f"x {x} to {out}")


def apply(name: str, x: Value, **attrs) -> Value:
    """Op ``name`` (or alias) on x, its declared parameters created in the current scope.
    ``attrs`` the op's shape rule does not name are left out (eps for a norm without one)."""
    from tgraph.ops import get_op

    op, fixed = resolve(name)
    opdef = get_op(op)
    attrs = {**{k: v for k, v in attrs.items() if opdef.takes_attr(k)}, **fixed}
    g = x.graph
    params = [g.param(p.name, p.shape, x.dtype, p.init) for p in opdef.params(x.type, **attrs)]
    return g.apply(op, [x, *params], attrs)
