"""Params: `param p = ...` with its options (learnable, per_layer, per_channel, positive,
an interval), the two equations of a recursive schedule (`param tk[0] = ...`, `param
tk[k+1] = ...`), the value at every layer, the bounds, and the names a param may not take
in the generated module."""

from __future__ import annotations

import math
from collections.abc import Collection

import sympy

from .. import ir, naming, schedules
from ..source import Span
from ..syntax import ast
from .context import MAX_DEPTH, Context, Job, _show
from .coupled import CoupledSchedules
from .scalars import ScalarResolver


class ParamResolver(Job):
    """The params of one network, each given the params declared before it."""

    def __init__(self, ctx: Context, scalars: ScalarResolver):
        super().__init__(ctx)
        self.scalars = scalars
        self.coupled = CoupledSchedules(ctx)

    def param(
        self,
        d: ast.ParamDecl,
        fixed: dict[str, ir.Param],
        declared: set[str],
        depth: int,
        unknown: Collection[str] = (),
    ) -> ir.Param:
        """Param `d`, given the params before it (`unknown`: those whose value failed)."""
        self.param_options(d)
        allowed: dict[str, sympy.Expr] = {"k": ir.K, "L": ir.L}
        for p in fixed.values():
            if not p.learnable and p.name not in unknown:
                allowed[p.name] = p.value
        for other in declared - set(fixed):
            if other != d.name.id and _mentions(d.value, other):
                self.fail(
                    d.value.span,
                    f"param '{d.name.id}' uses '{other}', which is declared after it",
                    "declare params before they are used",
                )
        for p in fixed.values():
            if p.learnable and _mentions(d.value, p.name):
                self.fail(
                    d.value.span,
                    f"param '{d.name.id}' uses the learnable param '{p.name}'",
                    "a param's value may only use numbers, k and fixed params; write the product in the update instead",
                )
        if any(_mentions(d.value, other) for other in (*unknown, *self.poisoned)):
            self.report.abandon()  # its value rests on one already reported
        value = sympy.simplify(
            self.scalars.scalar(d.value, allowed, f"the value of param {d.name.id}")
        )
        bound = None
        if d.positive:
            bound = ir.Bound(sympy.Integer(0), None, False, False)
        if d.interval is not None:
            iv = d.interval
            lo = self.scalars.scalar(iv.lo, {}, "an interval bound")
            hi = self.scalars.scalar(iv.hi, {}, "an interval bound")
            if lo >= hi:
                self.fail(iv.span, f"empty interval: {lo} is not below {hi}")
            bound = ir.Bound(lo, hi, iv.lo_closed, iv.hi_closed)
        if d.per_layer and not d.learnable:
            self.fail(
                d.span,
                f"per_layer only applies to learnable params; '{d.name.id}' is fixed",
                "add 'learnable', or use k in its value for a schedule",
            )
        if d.learnable and {ir.K, ir.L} & value.free_symbols and not d.per_layer:
            which = "k" if ir.K in value.free_symbols else "L (the depth)"
            self.fail(
                d.value.span,
                f"learnable param '{d.name.id}' depends on {which} but is shared by all layers",
                "add 'per_layer'",
            )
        if d.per_channel and not d.learnable:
            self.fail(
                _flag_span(d, "per_channel"),
                f"per_channel only applies to learnable params; '{d.name.id}' is fixed",
                "a fixed param has one value for every channel: add 'learnable', or drop "
                "'per_channel'",
            )
        param = ir.Param(
            d.name.id, value, d.learnable, d.per_layer, bound, d.positive, d.span, d.per_channel
        )
        values = self.layer_values(param, d, depth)
        if bound is not None:
            self.check_bound(param, d, values)
        return param

    def check_channel_axis(
        self, param_decls: list, block_decls: list, blocks: dict[str, ir.Block]
    ) -> None:
        """A per-channel param needs to know which axis holds the channels: a custom block
        that does not declare its layout leaves it unknown."""
        per_channel = next((d for d in param_decls if d.per_channel), None)
        if per_channel is None:
            return
        for d in block_decls:
            block = blocks.get(d.name.id)
            declared = any(a.key is not None and a.key.id == "layout" for a in d.args)
            if block is not None and block.kind == "custom" and not declared:
                self.report.error(
                    _flag_span(per_channel, "per_channel"),
                    f"per_channel param {per_channel.name.id}: the channel axis of custom "
                    f"block {d.name.id} is unknown, since it declares no layout",
                    f"add layout=vector (channels last), layout=sequence ([N, L, dim]) or "
                    f"layout=image ([N, dim, H, W]) to block {d.name.id}",
                )
                return

    def param_units(self, param_decls: list[ast.ParamDecl]) -> list[tuple]:
        """The params declared: (decl, None) for `param p = ...`, (decl, (start, step))
        for the two equations `param tk[0] = ...` and `param tk[k+1] = ...` of a recursive
        schedule, (decl, ()) for a recursive schedule with an error (reported here)."""
        units: list[tuple] = []
        groups: dict[str, dict[str, ast.ParamDecl]] = {}
        for d in param_decls:
            if d.index is None:
                units.append((d, None))
                continue
            role = self.attempt(self.equation_role, d)
            group = groups.get(d.name.id)
            if group is None:
                group = groups[d.name.id] = {}
                units.append((d, group))
            if role is None:
                group["error"] = d
            elif role in group:
                what = "start value" if role == "start" else "recursion"
                self.report.error(
                    d.span,
                    f"the {what} of schedule {d.name.id} is given twice",
                    f"keep one 'param {self.text(d.name)}[{'0' if role == 'start' else 'k+1'}] = ...'",
                )
                group["error"] = d
            else:
                group[role] = d
        resolved = []
        for d, group in units:
            if group is None:
                resolved.append((d, None))
                continue
            resolved.append((d, self.equations(d.name.id, group)))
        return resolved

    def equation_role(self, d: ast.ParamDecl) -> str:
        """'start' for `param tk[0] = ...`, 'step' for `param tk[k+1] = ...`."""
        index = self.scalars.scalar(d.index, {"k": ir.K}, "the index of a schedule")
        if index == 0:
            role = "start"
        elif index == ir.K + 1:
            role = "step"
        else:
            self.fail(
                d.index.span,
                f"a schedule is defined by {d.name.id}[0] = ... and {d.name.id}[k+1] = ..., "
                f"not {d.name.id}[{self.text(d.index)}]",
                "write param tk[0] = 1 and param tk[k+1] = (1 + sqrt(1 + 4*tk^2))/2",
            )
        for option in d.options:
            if isinstance(option, ast.ParamFlag) and option.word in ("learnable", "per_layer"):
                self.fail(
                    option.span,
                    f"schedule {d.name.id} is defined by a recursion, so it is fixed: "
                    f"'{option.word}' does not apply",
                    "declare a learnable per_layer param for coefficients learned per layer",
                )
            if role == "start":
                self.fail(
                    option.span,
                    f"put the options of schedule {d.name.id} on its recursion {d.name.id}[k+1]",
                )
        return role

    def equations(self, name: str, group: dict) -> tuple:
        if "error" in group:
            return ()
        if "start" not in group:
            self.report.error(
                group["step"].span,
                f"schedule {name} has a recursion but no start value",
                f"add: param {name}[0] = ...",
            )
            return ()
        if "step" not in group:
            self.report.error(
                group["start"].span,
                f"schedule {name} has a start value but no recursion",
                f"add: param {name}[k+1] = ... (or write param {name} = ... for a constant)",
            )
            return ()
        return (group["start"], group["step"])

    def recursive_param(
        self,
        start: ast.ParamDecl,
        step: ast.ParamDecl,
        fixed: dict[str, ir.Param],
        declared: set[str],
        depth: int,
        unknown: Collection[str] = (),
    ) -> ir.Param:
        """`param tk[0] = a` and `param tk[k+1] = f(tk, k)`: the sympy function tk(k)."""
        name = step.name.id
        if name in naming.reserved(naming.Reserved.CONSTRUCTOR_LOCAL):
            self.fail(
                step.name.span,
                f"'{name}' cannot name a recursive schedule: the generated constructor "
                "holds its values in a variable of that name, which it already uses",
                f"rename it, such as {name}_k",
            )
        self.param_options(step)
        allowed: dict[str, sympy.Expr] = {"k": ir.K}
        for p in fixed.values():
            if not p.learnable and p.name not in unknown:
                allowed[p.name] = p.value
        # Coupled schedules: the recursion may read one declared after it (at k or k+1).
        later = {n: r for n, r in self.ctx.pending.items() if n not in fixed and n != name}
        for d in (start, step):
            for other in declared - set(fixed) - {name} - (set(later) if d is step else set()):
                if _mentions(d.value, other):
                    self.fail(
                        d.value.span,
                        f"schedule {name} uses '{other}', which is declared after it",
                        "declare params before they are used",
                    )
            for p in fixed.values():
                if p.learnable and _mentions(d.value, p.name):
                    self.fail(
                        d.value.span,
                        f"schedule {name} uses the learnable param '{p.name}'",
                        "a schedule may only use numbers, k and fixed params",
                    )
            if any(_mentions(d.value, other) for other in (*unknown, *self.poisoned)):
                self.report.abandon()
        if _mentions(start.value, name):
            self.fail(start.value.span, f"the start value of {name} cannot use {name} itself")
        for d, what in ((start, "the start value"), (step, "the recursion")):
            if _mentions(d.value, "L"):
                self.fail(
                    _name_span(d.value, "L"),
                    f"{what} of {name} cannot read L, the depth",
                    "a recursion's values are computed once for every depth; write the "
                    "depth-dependent factor in the param that uses the schedule instead",
                )
        first = self.scalars.scalar(start.value, allowed, f"the start value of {name}")
        if first.free_symbols:
            self.fail(
                start.value.span,
                f"the start value of {name} must be a number, not depend on k",
            )
        for other in self.ctx.schedules:
            if _mentions(step.value, other) and other in naming.reserved(
                naming.Reserved.SCHEDULE_LOCAL
            ):
                self.fail(
                    step.value.span,
                    f"the recursion of {name} reads the recursive schedule '{other}', whose"
                    " name the generated code that continues the recursion already uses",
                    f"rename {other}, such as {other}_k",
                )
        self.ctx.recursion = (name, first)
        try:
            ahead = {n: r.function()(ir.K) for n, r in later.items()}
            inside = {**allowed, **ahead, name: schedules.PREVIOUS}
            rule = self.scalars.scalar(step.value, inside, f"the recursion of {name}")
        finally:
            self.ctx.recursion = None
        coupled = self.coupled.reads_ahead(name, step, rule, later)
        # One that reads a coupled schedule waits for its values too.
        waiting = {p.name for p, _ in self.ctx.coupled}
        coupled |= any(f.__name__ in waiting for f in schedules.schedule_functions(rule))
        if ir.L in rule.free_symbols:
            self.fail(
                step.value.span,
                f"the recursion of {name} depends on L, the depth, through a param",
                "a recursion's values are computed once for every depth; write the "
                "depth-dependent factor in the param that uses the schedule instead",
            )
        text = f"{name}[0] = {self.text(start.value)}; {name}[k+1] = {self.text(step.value)}"
        recurrence = self.ctx.pending.get(name) or schedules.Recurrence.pending(name)
        recurrence.define(first, sympy.simplify(rule), text)
        if not coupled:
            self.check_values(recurrence, step, depth)
        function = recurrence.function()
        self.ctx.schedules[name] = function
        bound = None
        if step.positive:
            bound = ir.Bound(sympy.Integer(0), None, False, False)
        if step.interval is not None:
            iv = step.interval
            lo = self.scalars.scalar(iv.lo, {}, "an interval bound")
            hi = self.scalars.scalar(iv.hi, {}, "an interval bound")
            if lo >= hi:
                self.fail(iv.span, f"empty interval: {lo} is not below {hi}")
            bound = ir.Bound(lo, hi, iv.lo_closed, iv.hi_closed)
        param = ir.Param(name, function(ir.K), False, False, bound, step.positive, step.span)
        if coupled:
            self.ctx.coupled.append((param, step))  # checked once the others are defined
        elif bound is not None:
            values = [(n, float(recurrence.value(n))) for n in range(min(depth, MAX_DEPTH))]
            self.check_bound(param, step, values)
        return param

    def check_coupled(self, depth: int, unknown) -> None:
        """Coupled schedules once all are defined (`CoupledSchedules.check`)."""
        self.coupled.check(depth, unknown, self.check_values, self.check_bound)

    def check_values(self, recurrence: schedules.Recurrence, step: ast.ParamDecl, depth: int):
        """Every value of the schedule within the declared depth is a finite float64."""
        for n in range(min(depth, MAX_DEPTH) + 1):
            try:
                recurrence.value(n)
            except ValueError as err:
                self.fail(
                    step.value.span,
                    f"schedule {err} within the declared depth ({depth} layers)",
                    "keep the recursion finite at every layer",
                )

    def check_param_attribute(self, d: ast.ParamDecl) -> None:
        """A learnable param is the attribute `module.<name>` (`<name>_raw` when it is
        constrained); a k-dependent one the table `module.<name>`. Neither may be an
        attribute the module has already (`named_parameters`, `_modules`, `solver`, ...)."""
        if not (d.learnable or _mentions(d.value, "k") or _mentions(d.value, "L")):
            return  # a fixed number: a local of forward, named freely
        constrained = d.learnable and (d.positive or d.interval is not None)
        attribute = f"{d.name.id}_raw" if constrained else d.name.id
        if attribute in naming.reserved(naming.Reserved.MODULE_ATTRIBUTE):
            self.report.error(
                d.name.span,
                f"param {d.name.id} would be the attribute module.{attribute}, which the "
                "generated module already has (from nn.Module or its solver settings)",
                f"rename the param, such as {d.name.id.strip('_')}_value",
            )

    def param_options(self, d: ast.ParamDecl) -> None:
        """Each option at most once, and at most one constraint (`positive` or an interval)."""
        name = d.name.id
        flags: set[str] = set()
        constraint = None
        ok = True
        for option in d.options:
            if isinstance(option, ast.ParamFlag):
                if option.word in flags:
                    self.report.error(
                        option.span,
                        f"param {name}: '{option.word}' is given twice",
                        f"remove the second '{option.word}'",
                    )
                    ok = False
                    continue
                flags.add(option.word)
                if option.word != "positive":
                    continue
            text = self.constraint_text(option)
            if constraint is None:
                constraint = text
                continue
            self.report.error(
                option.span,
                f"param {name} has two constraints: {constraint} and {text}",
                "keep one: a param has at most one constraint, positive or an interval",
            )
            ok = False
        if not ok:
            self.report.abandon()

    def constraint_text(self, option) -> str:
        if isinstance(option, ast.ParamFlag):
            return option.word
        return (
            f"in {'[' if option.lo_closed else '('}{self.text(option.lo)}, "
            f"{self.text(option.hi)}{']' if option.hi_closed else ')'}"
        )

    def layer_values(
        self, param: ir.Param, d: ast.ParamDecl, depth: int
    ) -> list[tuple[int, float]]:
        """The value at every layer k < depth (k-dependent) or once; an undefined value is an error."""
        layers = list(range(min(depth, MAX_DEPTH))) if param.depends_on_k else [0]
        # L is the declared layers here, as in the certificate.
        fn = sympy.lambdify(ir.K, param.value.xreplace({ir.L: depth}), "math")
        values = []
        for k in layers:
            try:
                v = float(fn(k))
            except (ZeroDivisionError, OverflowError, ValueError, TypeError):
                v = math.nan
            if not math.isfinite(v):
                at = f" at layer k={k}" if param.depends_on_k else ""
                self.fail(
                    d.value.span,
                    f"param {param.name} is undefined{at} (division by zero or overflow)",
                    "keep the value finite at every layer",
                )
            values.append((k, v))
        return values

    def check_bound(
        self, param: ir.Param, d: ast.ParamDecl, values: list[tuple[int, float]]
    ) -> None:
        for k, v in values:
            inside = param.bound.contains(v)
            strict = ir.Bound(param.bound.lo, param.bound.hi, False, False).contains(v)
            at = f" at layer k={k}" if param.depends_on_k else ""
            if not inside:
                self.fail(
                    d.value.span,
                    f"param {param.name} = {_show(v)}{at} violates its constraint {param.bound.show(param.name)}",
                )
            if param.learnable and not strict:
                self.fail(
                    d.value.span,
                    f"learnable param {param.name} starts at {_show(v)}{at}, on the boundary of {param.bound.show(param.name)}",
                    "a reparametrized param can only approach its bounds; start strictly inside",
                )


def _flag_span(d: ast.ParamDecl, word: str) -> Span:
    return next(o.span for o in d.options if isinstance(o, ast.ParamFlag) and o.word == word)


def _name_span(node, name: str) -> Span:
    """Where `name` is first read in `node`."""
    return next(n.span for n in ast.walk(node) if isinstance(n, ast.Name) and n.id == name)


def _mentions(node, name: str) -> bool:
    return any(isinstance(n, ast.Name) and n.id == name for n in ast.walk(node))
