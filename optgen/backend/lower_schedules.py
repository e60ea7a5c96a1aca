"""Per-layer tables and recursive schedules: the coefficients that depend on the layer k.

A fixed coefficient in k is a table of floats the module fills in `__init__`
(`Schedule`, created where `lower_terms.Terms.schedule` folds it); a recursive schedule
(`param tk[0] = 1`, `param tk[k+1] = ...`) is a `RecurrencePlan`: optgen's values for the
declared depth, continued by a module-level function for a deeper module.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy

from .. import ir, naming, schedules
from ..naming import snake_case


@dataclass(frozen=True)
class Schedule:
    """A fixed per-layer coefficient: `self.<attr> = [float(<expr in k>) for k in ...]`."""

    attr: str
    expr: str
    shown: str


@dataclass(frozen=True)
class RecurrencePlan:
    """A recursive schedule: optgen's values for the declared depth, continued by the
    module-level `function` in float64 for a deeper module (`name = function(count)`)."""

    name: str
    function: str  # the module-level function computing the values
    table: str  # the module-level tuple of optgen's values
    values: tuple[float, ...]
    previous: str  # the name of the previous value inside `function`
    step: str  # Python expression of the next value in `previous` and k
    shown: str  # the two equations as the rule writes them
    count: str  # how many values __init__ needs: "start + depth + 1"


def coefficients(form: ir.LinearForm):
    """Every coefficient `form` holds, nested ones included: the terms' coefficients, those
    of block and map arguments, a map's scalars (a threshold, a bound) and the body of a sum
    over history (in k, its index set to k: the term the sum gains at layer k)."""
    for atom, coef in form.terms:
        yield coef
        if isinstance(atom, ir.MapOut):
            yield from atom.scalars
        if isinstance(atom, (ir.BlockOut, ir.MapOut)):
            yield from coefficients(atom.arg)
        elif isinstance(atom, ir.HistorySum):
            for inner in coefficients(atom.body):
                yield sympy.sympify(inner).subs(atom.var, ir.K)


def recurrence_plans(net: ir.Network) -> tuple[RecurrencePlan, ...]:
    """The recursive schedules the module computes, each read up to tk[k + ahead]."""
    functions = {f for p in net.params for f in schedules.schedule_functions(p.value)}
    reads = [
        a for p in net.params for a in sympy.sympify(p.value).atoms(schedules.RecursiveSchedule)
    ]
    forms = [st.form for st in net.statements] + [assign.form for assign in net.init]
    for form in forms:
        for coef in coefficients(form):
            reads += sympy.sympify(coef).atoms(schedules.RecursiveSchedule)
    plans = []
    prefix = snake_case(net.name)
    for function in sorted(functions, key=lambda f: f.__name__):
        name = function.__name__
        rule = function.rule
        ahead = max(
            (
                int(a.args[0] - ir.K)
                for a in reads
                if a.func is function and ir.K in a.args[0].free_symbols
            ),
            default=0,
        )
        fixed_reads = [int(a.args[0]) for a in reads if a.func is function and a.args[0].is_Integer]
        count = net.depth + net.start + ahead
        count = max(count, *(n + 1 for n in fixed_reads)) if fixed_reads else count
        previous = (
            name if name not in naming.reserved(naming.Reserved.SCHEDULE_LOCAL) else "previous"
        )
        step = rule.step.subs(schedules.PREVIOUS, sympy.Symbol(previous))
        need = "start + depth" + (f" + {ahead}" if ahead else "")
        if fixed_reads:
            need = f"max({need}, {max(fixed_reads) + 1})"
        plans.append(
            RecurrencePlan(
                name=name,
                function=f"_{prefix}_{name}",
                table=f"_{prefix}_{name}_values".upper(),
                values=tuple(rule.float_values(count)),
                previous=previous,
                step=schedules.python_code(step),
                shown=rule.text,
                count=need,
            )
        )
    return tuple(plans)
