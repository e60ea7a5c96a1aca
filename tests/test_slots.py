"""What a layer loop carries is defined once, on the IR (`ir.carried_slots`, `ir.read_lags`):
the module's slots (`forward_slots`, `_layer`), the model check of `carry states` and the
analysis' stacked iterate read it. Here the IR's definition is held against what the
lowered layer of every catalog network reads and carries."""

from __future__ import annotations

from unittest import mock

import pytest
from conftest import EXAMPLES

import optgen
from optgen import ir
from optgen.analysis import recurrence, reversible
from optgen.backend import plan
from optgen.backend.lower import Lowerer, lower
from optgen.checks import carry
from optgen.pipeline import Stage, compile
from optgen.source import SourceFile

CATALOG = sorted(EXAMPLES.glob("*.opt")) + sorted((EXAMPLES / "models").glob("*.opt"))


def _networks(text: str, name: str) -> tuple[ir.Network, ...]:
    result = compile(SourceFile(name, text), until=Stage.FRONTEND)
    assert result.ok, result.errors
    return result.networks


CATALOG_NETWORKS = [net for path in CATALOG for net in _networks(path.read_text(), path.name)]

RULE = """
network {name} {{
    state {states}
    param t = 0.5
    block T = mlp(hidden=2*dim, act=relu)
    layers 4
    update {{
        {update}
    }}
}}
"""
# Rules whose layers carry more than states: lags, x[0], sums, the input, a zero that
# the module makes in the input's shape, names Python or the module takes first.
EDGE_NETWORKS = [
    net
    for i, (states, update) in enumerate(
        [
            ("x", "x+ = x[0] - t*T(x-) + 0.5*x[k-2] + sum(i = k-1..k, x[i])"),
            (
                "x",
                "g = T(x)\n        x+ = x - t*g + 0.5*g- + sum(i = 0..k, g[i]) + sum(i = 1..k, x[i])",
            ),
            ("x", "x+ = x - t*T(x) + input"),
            ("z", "z+ = z - t*T(z + input)"),
            ("x", "x+ = x - t*T(x - x)"),
            ("x", "x+ = x - t*T(x) + sum(i = k-2..k, x[i] - x[i])"),
            ("lambda, v", "v+ = 0.5*v - t*T(lambda)\n        lambda+ = lambda + v+ + 0.1*lambda-"),
        ]
    )
    for net in _networks(RULE.format(name=f"Edge{i}", states=states, update=update), "e.opt")
]


def _layer_ops(p) -> tuple[tuple[plan.Op, ...], tuple[plan.Op, ...]]:
    """The ops before the layer (the prologue) and those of one layer, as the module runs
    them: the loop of `forward_slots`, or `_layer` where the runtime runs the loop."""
    ops = p.layer if p.runtime else p.forward_slots
    at = next(i for i, op in enumerate(ops) if isinstance(op, plan.Unpack))
    assert ops[at].targets == p.slots
    rest = ops[at + 1 :]
    if not p.runtime:
        (loop,) = [op for op in rest if isinstance(op, plan.Loop)]
        rest = loop.body
    return ops[:at], rest


def _read_before_written(ops: tuple[plan.Op, ...]) -> set[str]:
    """The names a layer reads before it binds them: what it takes from the layer before."""
    bound: set[str] = set()
    read: set[str] = set()
    for op in plan.walk(ops):
        read |= set(op.uses) - bound
        bound |= set(op.defines)
        bound |= {getattr(op, "param", None), *getattr(op, "params", ())} - {None}
    return read


@pytest.mark.parametrize("net", CATALOG_NETWORKS + EDGE_NETWORKS, ids=lambda n: n.name)
def test_the_module_carries_the_slots_the_ir_defines(net):
    p = lower(net)
    if net.equilibrium:  # solved for a fixed point: no layer loop, nothing carried
        assert p.slots == ()
        return
    slots = ir.carried_slots(net)
    assert carry.carried_slots(net) == p.slots  # the model check's names are the module's
    prologue, layer = _layer_ops(p)
    given = {name for op in prologue for name in op.defines}
    read = _read_before_written(layer) - given
    # The layer takes nothing from the layer before that is not carried, and every
    # carried value but a state (which may be only written, as the output) is read.
    # Known gap, kept as it was: the terms of a sliding window (`window = []` in the init)
    # are not among the slots, so `carry states` does not hand them on.
    windows = {op.target for op in plan.walk(p.forward) if isinstance(op, plan.EmptyWindow)}
    assert read - windows <= set(p.slots)
    for var, slot in zip(p.slots, slots, strict=True):
        if not (isinstance(slot.atom, ir.StateAt) and slot.atom.lag == 0):
            assert var in read, slot


def test_the_analysis_stacks_the_slots_the_layer_keeps():
    # The reversible inverse undoes exactly the lag slots the loop keeps; the recurrence
    # reads its lags off the substituted update, which a lagged local can deepen.
    heavy_ball = next(n for n in CATALOG_NETWORKS if n.name == "HeavyBall")
    assert ir.stacked_slots(heavy_ball.states, ir.read_lags(heavy_ball)) == (("x", 0), ("x", -1))
    assert recurrence.reduce_rule(heavy_ball).slots == (("x", 0), ("x", -1))
    ab3 = next(n for n in CATALOG_NETWORKS if n.name == "AdamsBashforth3")
    assert ir.read_lags(ab3) == {"x": 0}  # g-, g[k-2]: the loop keeps g's history, not x's
    assert recurrence.reduce_rule(ab3).slots == (("x", 0), ("x", -1), ("x", -2))
    (momentum,) = _networks(
        RULE.format(name="Momentum", states="x", update="x+ = x - t*T(x) + 0.5*(x - x-)").replace(
            "layers 4", "layers 4\n    backward reversible"
        ),
        "m.opt",
    )
    assert reversible.invert(momentum).slots == (("x", 0), ("x", -1))
    assert [s.name for s in ir.carried_slots(momentum)] == ["x", "x_prev"]


STAGES = """
network WithLambda {
    state lambda
    param t = 0.5
    block T = conv(hidden=dim)
    layers 2
    update {
        lambda+ = lambda - t*T(lambda) + 0.5*(lambda - lambda-)
    }
}
network Plain {
    state lambda
    param t = 0.5
    block T = conv(hidden=dim)
    layers 2
    update {
        lambda+ = lambda - t*T(lambda)
    }
}
model Mixed {
    input [3, 8, 8]
    stem conv(out=4)
    stage WithLambda(dim=4, depth=2)
    norm carry states
    stage Plain(dim=4, depth=2)
    head none
}
"""


def test_the_carry_check_reads_the_ir_and_names_slots_as_the_module_does():
    # The check runs before lowering and without it; its message names the slots as the
    # generated modules do (a state `lambda` is `lambda_` in Python).
    with mock.patch.object(Lowerer, "lower", side_effect=AssertionError("lowered")):
        result = compile(SourceFile("m.opt", STAGES), until=Stage.FRONTEND)
    (error,) = result.errors
    assert error.message == (
        "carry states from WithLambda to Plain: their layers carry different values"
        " (lambda_, lambda_prev) and (lambda_)"
    )
    nets = {n.name: n for n in result.networks}
    assert lower(nets["WithLambda"]).slots == ("lambda_", "lambda_prev")
    with pytest.raises(optgen.OptgenError):
        optgen.compile_source(STAGES, "m.opt")
