"""Symbolic shape arithmetic agrees with NumPy once the symbols are bound (hypothesis)."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from tgraph.shapes import broadcast, dim_div, dim_mul, eval_dim, eval_shape, norm_dim, shape_size

SYMS = ("B", "T", "H")
dims = st.one_of(st.integers(1, 4), st.sampled_from(SYMS))
shapes = st.lists(dims, max_size=4).map(tuple)
envs = st.fixed_dictionaries({s: st.integers(2, 5) for s in SYMS})


@given(shapes, shapes, envs)
def test_broadcast_agrees_with_numpy_when_it_answers(a, b, env):
    out = broadcast(a, b)
    if out is not None:  # symbolic broadcasting is stricter: B vs T is refused, not guessed
        assert eval_shape(out, env) == np.broadcast_shapes(eval_shape(a, env),
                                                           eval_shape(b, env))


@given(shapes, envs)
def test_size_is_the_product(a, env):
    assert eval_dim(shape_size(a), env) == int(np.prod(eval_shape(a, env)))


@given(dims, dims, envs)
def test_mul_then_div_round_trips(a, b, env):
    prod = dim_mul(a, b)
    assert eval_dim(prod, env) == eval_dim(a, env) * eval_dim(b, env)
    assert dim_div(prod, b) == norm_dim(a)


def test_canonical_form():
    assert norm_dim("T*B") == "B*T" and norm_dim("2*B*2") == "4*B" and norm_dim("6") == 6
    assert dim_div("B*T", "T*T") is None and dim_div(6, 4) is None
