"""Sums over history, `sum(i = lo..k, body)` (language.md 5.2): the bounds (from 0, from a
fixed layer, or a sliding window k - m) and a body whose every term is indexed by i."""

from __future__ import annotations

from collections.abc import Callable

import sympy

from .. import ir
from ..syntax import ast
from .context import RESERVED, Context, Job
from .scalars import ScalarResolver
from .values import Scope, Tensor


class HistorySums(Job):
    """One sum over history of an update statement."""

    def __init__(self, ctx: Context, scalars: ScalarResolver):
        super().__init__(ctx)
        self.scalars = scalars

    def resolve(
        self, node: ast.HistorySum, scope: Scope, tensor: Callable, learnable: Callable
    ) -> Tensor:
        """`sum(i = lo..k, body)`: its bounds, and a body of terms indexed by i."""
        if node.func != "sum":
            self.fail(
                node.span,
                f"'{node.func}(i = ..)' is not a function; did you mean sum(i = 0..k, ...)?",
            )
        if scope.sum_var is not None:
            self.fail(node.span, "sums cannot be nested")
        var = node.var
        if var in scope.states or var in scope.params or var in scope.locals_ or var in RESERVED:
            self.fail(
                node.span,
                f"the summation index '{var}' hides another name; pick a fresh one (i, j)",
            )
        lo = self.scalars.scalar(node.lo, {"k": ir.K}, "the lower bound of a sum")
        window = None
        if ir.K in lo.free_symbols:
            width = sympy.expand(ir.K - lo)
            if not (width.is_Integer and width >= 0):
                self.fail(
                    node.lo.span,
                    f"the lower bound '{self.text(node.lo)}' of a sum must be an integer or k - m",
                    "write sum(i = 0..k, ...) over every layer, or sum(i = k-2..k, ...) over the last three",
                )
            if width > 64:
                self.fail(
                    node.lo.span,
                    f"a window of {width + 1} terms is too wide",
                    "sum at most 65 terms",
                )
            window, lo = int(width), sympy.Integer(0)
        elif not lo.is_integer or lo < 0:
            self.fail(
                node.lo.span, "the lower bound of a sum must be a non-negative integer or k - m"
            )
        hi = self.scalars.scalar(node.hi, {"k": ir.K}, "the upper bound of a sum")
        if hi != ir.K:
            self.fail(node.hi.span, "a sum runs up to k: sum(i = 0..k, ...)")
        scope.sum_var = var
        try:
            body = tensor(node.body, scope, "the body of a sum")
        finally:
            scope.sum_var = None
        for atom in body.atoms():
            if not isinstance(atom, ir.History):
                self.fail(
                    node.body.span,
                    f"every term of a sum must be indexed by '{var}', like g[{var}]; '{atom.show()}' is not",
                )
        for _, coef in body.terms:
            if ir.K in coef.free_symbols:
                self.fail(node.body.span, "the terms of a sum may depend on the index, not on k")
            if ir.L in coef.free_symbols:
                self.fail(node.body.span, "the terms of a sum may depend on the index, not on L")
            if any(learnable(s, scope) for s in coef.free_symbols):
                self.fail(
                    node.body.span, "the coefficients inside a sum must be fixed, not learnable"
                )
        total = ir.HistorySum(sympy.Symbol(var, integer=True), int(lo), body, window)
        return Tensor(ir.LinearForm.of(total), node.span)
