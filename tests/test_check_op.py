"""check_op on every registered op: the shape rule agrees with the kernel's output, and the
VJP agrees with central finite differences in float64 on each of the op's examples.
This is also the "shape rule vs kernel output for every op" test."""

from __future__ import annotations

import pytest

import tgraph  # noqa: F401  (registers the built-in ops)
from tgraph import builder as tb
from tgraph.checks import check_op
from tgraph.ops import all_ops
from tgraph.ops.registry import OpDef, register_op, unregister_op


@pytest.mark.parametrize("name", sorted(all_ops()))
def test_every_registered_op_passes_its_checks(name):
    report = check_op(name)
    assert report.ok, str(report)
    assert all_ops()[name].has_vjp  # every primitive is differentiable (or says it is zero)


@pytest.fixture
def custom_op():
    """A user's op registered for one test, removed afterwards."""
    made = []

    def make(name, infer, kernel, vjp):
        cls = type(name, (OpDef,), {
            "name": name, "infer": lambda self, types: infer(types[0]),
            "kernel": lambda self, xp, x: kernel(x),
            "vjp": lambda self, node, grads: vjp(node, grads),
            "examples": lambda self, rng: [([rng.standard_normal((3, 2))], {})]})
        register_op(cls)
        made.append(name)
        return name

    yield make
    for name in made:
        unregister_op(name)


def test_a_correct_custom_op_passes(custom_op):
    name = custom_op("cube", lambda t: t, lambda x: x ** 3,
                     lambda node, g: [g[0] * node.inputs[0] * node.inputs[0] * 3])
    assert check_op(name).ok


def test_a_wrong_vjp_is_caught(custom_op):
    name = custom_op("cube_bad", lambda t: t, lambda x: x ** 3,
                     lambda node, g: [g[0] * node.inputs[0] * node.inputs[0]])
    report = check_op(name)
    assert not report.ok and "finite differences" in str(report)


def test_a_shape_rule_that_lies_is_caught(custom_op):
    name = custom_op("row_sum", lambda t: t, lambda x: x.sum(-1),
                     lambda node, g: [tb.broadcast_to(g[0], node.inputs[0].shape)])
    report = check_op(name)
    assert not report.ok and "shape rule" in str(report)


def test_an_op_without_examples_is_not_ok():
    class NoExamples(OpDef):
        name = "no_examples"

    register_op(NoExamples)
    try:
        report = check_op("no_examples")
    finally:
        unregister_op("no_examples")
    assert not report.ok and "no examples" in str(report)
