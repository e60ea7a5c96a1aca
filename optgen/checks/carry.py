"""`carry states` between two stages of a model: the layer loops on both sides carry the
same slots (`ir.carried_slots`), and neither is an equilibrium, which has no layers."""

from __future__ import annotations

from .. import ir
from ..naming import Namespace


def carried_slots(net: ir.Network) -> tuple[str, ...]:
    """What a stage of `net` carries, by role (`ir.carried_slots`): states, lags per state,
    x[0]s, sums, input; each under the variable name the module gives it (a state
    `lambda` is `lambda_`, a second sum `history_sum_`)."""
    names = Namespace()
    return tuple(names.create(slot.name) for slot in ir.carried_slots(net))


def slot_mismatches(model: ir.Model, networks: dict[str, ir.Network]) -> list[tuple]:
    """`carry states` between two networks whose layer loops carry different slots."""
    problems = []
    for i, t in enumerate(model.transitions):
        before, after = model.stages[i].network, model.stages[i + 1].network
        if t.carry is not ir.Carry.STATES:
            continue
        solved = [n for n in (before, after) if networks[n].kind is ir.NetworkKind.EQUILIBRIUM]
        if solved:
            problems.append(
                (
                    t.span,
                    f"carry states into or out of the equilibrium network {solved[0]}: it is "
                    "a fixed point, not a stack of layers",
                )
            )
            continue
        if before == after:
            continue
        a, b = carried_slots(networks[before]), carried_slots(networks[after])
        if a != b:
            problems.append(
                (
                    t.span,
                    f"carry states from {before} to {after}: their layers carry different "
                    f"values ({', '.join(a)}) and ({', '.join(b)})",
                )
            )
    return problems
