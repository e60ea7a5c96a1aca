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
    step: str  # Python expression of the next value in `previous`, the lags and k
    shown: str  # the two equations as the rule writes them
    count: str  # how many values __init__ needs: "start + depth + 1"
    # (variable, lag) of each earlier value the step reads: `tk[k-1]` is values[k - 1].
    lags: tuple[tuple[str, int], ...] = ()
    # (name, function, count) of each other schedule the step reads: `name =
    # function(count)` holds its values (`count` in the `count` of this function).
    reads: tuple[tuple[str, str, str], ...] = ()


def _table_name(wanted: str, taken: set[str]) -> str:
    """A module-level name for a schedule's table, unique: the upper-cased names of
    schedules `A` and `a` are the same (`_NET_A_VALUES`), and one table would replace
    the other."""
    name, n = wanted, 1
    while name in taken:
        n += 1
        name = f"{wanted}_{n}"
    taken.add(name)
    return name


def coefficients(form: ir.LinearForm):
    """Every coefficient `form` holds, nested ones included: the terms' coefficients, those
    of block and map arguments, a map's scalars (a threshold, a bound), a data-scaled
    term's factor and forms, and the body of a sum over history (in k, its index set to k: the term the sum gains at layer k).
    """
    for atom, coef in form.terms:
        yield coef
        if isinstance(atom, ir.MapOut):
            yield from atom.scalars
        if isinstance(atom, ir.DataScaled):
            yield atom.factor
        if isinstance(atom, (ir.BlockOut, ir.MapOut, ir.DataScaled)):
            for inner in ir.inner_forms(atom):
                yield from coefficients(inner)
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
    tables: set[str] = set()
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
        lags = tuple((schedules.lag_name(previous, j), j) for j in schedules.lags_of(rule.step))
        step = rule.step.xreplace(
            {
                schedules.PREVIOUS: sympy.Symbol(previous),
                **{schedules.lagged(j): sympy.Symbol(var) for var, j in lags},
            }
        )
        reads_other = []
        for other in sorted(schedules.schedule_functions(rule.step), key=lambda f: f.__name__):
            applied = [a for a in rule.step.atoms(schedules.RecursiveSchedule) if a.func is other]
            further = max(
                (int(a.args[0] - ir.K) for a in applied if ir.K in a.args[0].free_symbols),
                default=0,
            )
            fixed = [int(a.args[0]) + 1 for a in applied if a.args[0].is_Integer]
            other_count = "count" + (f" + {further}" if further else "")
            if fixed:
                other_count = f"max({other_count}, {max(fixed)})"
            reads_other.append((other.__name__, f"_{prefix}_{other.__name__}", other_count))
        need = "start + depth" + (f" + {ahead}" if ahead else "")
        if fixed_reads:
            need = f"max({need}, {max(fixed_reads) + 1})"
        plans.append(
            RecurrencePlan(
                name=name,
                function=f"_{prefix}_{name}",
                table=_table_name(f"_{prefix}_{name}_values".upper(), tables),
                values=tuple(rule.float_values(count)),
                previous=previous,
                step=schedules.python_code(step),
                shown=rule.text,
                count=need,
                lags=lags,
                reads=tuple(reads_other),
            )
        )
    return tuple(plans)
