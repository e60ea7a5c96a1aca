"""Coupled recursive schedules (language.md 4.3): a recursion that reads a schedule declared
after it, at k or k+1. Their values are checked once every one of them is defined, after
the check that no two of them wait for each other (reads at k+1 in a cycle)."""

from __future__ import annotations

import sympy

from .. import ir, schedules
from ..source import Span
from ..syntax import ast
from .context import MAX_DEPTH, Job


class CoupledSchedules(Job):
    """The reads of later-declared schedules, and the checks of the coupled ones."""

    def reads_ahead(self, name: str, step: ast.ParamDecl, rule: sympy.Expr, later: dict) -> bool:
        """Whether the recursion of `name` reads a schedule declared after it; such a read
        is at k or k+1 (the two are computed side by side, layer after layer)."""
        found = False
        for read in rule.atoms(schedules.RecursiveSchedule):
            other = read.func.__name__
            if other not in later:
                continue
            found = True
            if read.args[0] not in (ir.K, ir.K + 1):
                self.fail(
                    read_span(step.value, other),
                    f"the recursion of {name} reads {other}, declared after it, at "
                    f"'{schedules.user_str(read)}': a coupled schedule is read at k or k+1",
                    f"write {other} (its value at k) or {other}[k+1]",
                )
        return found

    def check(self, depth: int, unknown, check_values, check_bound) -> None:
        """Coupled schedules, once all are defined: no cycle of reads at k+1 (each would
        wait for the other), then every value finite (`check_values`) and within its
        constraint (`check_bound`)."""
        coupled, self.ctx.coupled = self.ctx.coupled, []
        if not coupled or any(p.name in unknown for p, _ in coupled):
            return
        ahead = {}  # schedule -> the schedules its recursion reads at k+1
        for name, recurrence in self.ctx.pending.items():
            if recurrence.step is None:
                return  # a schedule that failed: reported already
            reads = recurrence.step.atoms(schedules.RecursiveSchedule)
            ahead[name] = sorted(r.func.__name__ for r in reads if r.args[0] == ir.K + 1)
        reads = {
            name: {r.func.__name__ for r in rec.step.atoms(schedules.RecursiveSchedule)}
            for name, rec in self.ctx.pending.items()
        }
        failed = False
        for param, step in coupled:
            mine = schedules.reachable(param.name, reads)
            group = {n for n in mine if param.name in schedules.reachable(n, reads)}
            for read in self.ctx.pending[param.name].step.atoms(schedules.RecursiveSchedule):
                other = read.func.__name__
                if other in group and other != param.name and read.args[0] not in (ir.K, ir.K + 1):
                    failed = True
                    self.attempt(
                        self._fail_at,
                        step,
                        other,
                        f"the recursion of {param.name} reads {other}, which reads it in turn, at "
                        f"'{schedules.user_str(read)}': coupled schedules read each other at k or k+1",
                    )
        if failed:
            return
        for param, step in coupled:
            cycle = _cycle_from(param.name, ahead)
            if cycle:
                path = " -> ".join(f"{n}[k+1]" for n in cycle)
                self.attempt(
                    self._fail_at,
                    step,
                    cycle[1],
                    f"the recursions of {' and '.join(sorted(set(cycle)))} wait for each other: {path}",
                )
                return
        for param, step in coupled:
            self.attempt(check_values, self.ctx.pending[param.name], step, depth)
            if param.bound is not None:
                recurrence = self.ctx.pending[param.name]
                values = [(n, float(recurrence.value(n))) for n in range(min(depth, MAX_DEPTH))]
                self.attempt(check_bound, param, step, values)

    def _fail_at(self, step: ast.ParamDecl, other: str, message: str) -> None:
        self.fail(
            read_span(step.value, other),
            message,
            "read one of them at k (its previous value): name[k+1] = f(name, other)",
        )


def _cycle_from(start: str, ahead: dict[str, list[str]]) -> list[str] | None:
    """A path start -> ... -> start along reads at k+1, if there is one."""
    stack, seen = [(start, [start])], set()
    while stack:
        node, path = stack.pop()
        for nxt in ahead.get(node, []):
            if nxt == start:
                return path + [start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, path + [nxt]))
    return None


def read_span(node, name: str) -> Span:
    """Where `name` is first read in `node` at an index (`b[k+1]`), else by name."""
    for n in ast.walk(node):
        if isinstance(n, ast.Indexed) and n.id == name:
            return n.span
    return next(n.span for n in ast.walk(node) if isinstance(n, ast.Name) and n.id == name)
