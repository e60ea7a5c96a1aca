"""Per-layer tables and recursive schedules: the coefficients that depend on the layer k.

A fixed coefficient in k is a table of floats the module fills in `__init__`
(`Schedule`, created where `lower_terms.Terms.schedule` folds it); a recursive schedule
(`param tk[0] = 1`, `param tk[k+1] = ...`) is a `RecurrencePlan`: optgen's values for the
declared depth, continued by a module-level function for a deeper module.
"""

from __future__ import annotations

import dataclasses
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
    # Coupled schedules (each reads the other): the joint function continuing them side by
    # side, and this one's place in what it returns.
    joint: tuple[str, int] | None = None


@dataclass(frozen=True)
class CoupledPlan:
    """Recursive schedules that read each other (language.md 4.3): one module-level
    `function` continues them side by side, layer after layer, in float64."""

    function: str
    members: tuple[str, ...]  # in the order a layer computes them (reads at k+1 first)
    tables: tuple[str, ...]  # their tables of optgen's values, in that order
    first: int  # the values every table holds
    steps: tuple[str, ...]  # each member's next value, reading the lists of all of them
    reads: tuple[tuple[str, str, str], ...] = ()  # other schedules read, as RecurrencePlan's

    @property
    def member_tables(self) -> tuple[tuple[str, str], ...]:
        return tuple(zip(self.members, self.tables))

    @property
    def member_steps(self) -> tuple[tuple[str, str], ...]:
        return tuple(zip(self.members, self.steps))


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


def coupled_groups(functions) -> list[list]:
    """The schedules that read each other, directly or through others: each group in an
    order where a schedule read at k+1 comes before its reader."""
    reads = {f: schedules.schedule_functions(f.rule.step) for f in functions}
    reach = {f: schedules.reachable(f, reads) for f in functions}
    groups, placed = [], set()
    for f in sorted(functions, key=lambda f: f.__name__):
        group = [g for g in functions if g is f or (g in reach[f] and f in reach[g])]
        if len(group) > 1 and f not in placed:
            placed.update(group)
            groups.append(_ahead_first(group))
    return groups


def _ahead_first(group: list) -> list:
    """`group` ordered so that each schedule follows those its recursion reads at k+1."""
    order: list = []
    while len(order) < len(group):
        for f in sorted(group, key=lambda f: f.__name__):
            needs = {
                a.func
                for a in f.rule.step.atoms(schedules.RecursiveSchedule)
                if a.args[0] == ir.K + 1 and a.func in group
            }
            if f not in order and needs <= set(order):
                order.append(f)
                break
        else:  # pragma: no cover - the resolver refuses a cycle of reads at k+1
            raise AssertionError("coupled schedules that wait for each other")
    return order


def coupled_plans(net: ir.Network, plans: tuple[RecurrencePlan, ...]):
    """The recurrences with each coupled one pointing at its group's joint function, and
    the groups' plans."""
    functions = {f for p in net.params for f in schedules.schedule_functions(p.value)}
    by_name = {plan.name: plan for plan in plans}
    groups = coupled_groups(functions)
    if not groups:
        return plans, ()
    prefix = snake_case(net.name)
    coupled, joint = [], {}
    for group in groups:
        names = [f.__name__ for f in group]
        function = f"_{prefix}_{'_'.join(names)}"
        steps = []
        for f in group:
            rule = f.rule
            own = {schedules.PREVIOUS: f(ir.K)}
            own.update(
                {
                    schedules.lagged(j): f(sympy.Max(ir.K - j, 0))
                    for j in schedules.lags_of(rule.step)
                }
            )
            steps.append(schedules.python_code(rule.step.xreplace(own)))
        outside = {}
        for f in group:
            for name, fn, count in by_name[f.__name__].reads:
                if name not in names:
                    outside[name] = (name, fn, count)
        coupled.append(
            CoupledPlan(
                function=function,
                members=tuple(names),
                tables=tuple(by_name[n].table for n in names),
                first=min(len(by_name[n].values) for n in names),
                steps=tuple(steps),
                reads=tuple(outside[n] for n in sorted(outside)),
            )
        )
        joint.update({n: (function, i) for i, n in enumerate(names)})
    plans = tuple(
        dataclasses.replace(p, joint=joint[p.name]) if p.name in joint else p for p in plans
    )
    return plans, tuple(coupled)


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
