"""Per-sample scalars (language.md 5.6): `dot(a, b)` and `norm(a)` of tensor expressions,
the scalars computed from them, and a tensor scaled by one (an `ir.DataScaled` term)."""

from __future__ import annotations

from collections.abc import Callable

import sympy

from .. import ir
from ..syntax import ast
from .context import Context, Job, _clip
from .scalars import ScalarResolver
from .values import DataScalar, Scope, Value

REDUCTIONS = {
    "dot": (ir.ReductionKind.DOT, 2, "dot(a, b)"),
    "norm": (ir.ReductionKind.NORM, 1, "norm(a)"),
}
# Functions of the layer index only: a per-sample scalar is not an integer.
INTEGER_FUNCTIONS = ("floor", "ceil")


def _merged(values: list) -> tuple[tuple[ir.Reduction, ...], list[sympy.Expr]]:
    """The reductions of several scalars as one list, and each one's expression in the
    symbols of that list (a reduction read twice is one symbol)."""
    reductions: list[ir.Reduction] = []
    stand_ins: list[sympy.Dummy] = []  # renumbered symbols never meet another's
    exprs = []
    for v in values:
        mapping = {}
        for i, r in enumerate(getattr(v, "reductions", ())):
            if r not in reductions:
                reductions.append(r)
                stand_ins.append(sympy.Dummy())
            mapping[ir.reduction_symbol(i, r)] = stand_ins[reductions.index(r)]
        exprs.append(v.expr.xreplace(mapping))
    final = {d: ir.reduction_symbol(i, r) for i, (d, r) in enumerate(zip(stand_ins, reductions))}
    return tuple(reductions), [e.xreplace(final) for e in exprs]


def data_term(data: DataScalar, form: ir.LinearForm, text: str = "") -> ir.LinearForm:
    """`data * form`: the factor that holds no reduction stays a coefficient of the linear
    form, the rest becomes a `DataScaled` atom over the reductions it reads."""
    if len(form.terms) == 1 and isinstance(form.terms[0][0], ir.DataScaled):
        # (dot(a, b)*g)/norm(c): one scaled term, its factors multiplied.
        inner, coef = form.terms[0]
        reductions, (a, b) = _merged([DataScalar(inner.factor, inner.reductions, data.span), data])
        joined = f"{inner.text}/{text[2:]}" if text.startswith("1/(") else f"{inner.text}*{text}"
        return data_term(DataScalar(coef * a * b, reductions, data.span), inner.arg, joined)
    symbols = [ir.reduction_symbol(i, r) for i, r in enumerate(data.reductions)]
    fixed, rest = data.expr.as_independent(*symbols, as_Add=False)
    if not rest.free_symbols & set(symbols):
        return form.scale(data.expr)
    used = [(s, r) for s, r in zip(symbols, data.reductions) if s in rest.free_symbols]
    renumbered = {s: ir.reduction_symbol(i, r) for i, (s, r) in enumerate(used)}
    atom = ir.DataScaled(rest.xreplace(renumbered), tuple(r for _, r in used), form, text)
    return ir.LinearForm.of(atom, fixed)


class DataScalars(Job):
    """dot and norm as an update reads them, and what is computed from them."""

    def __init__(self, ctx: Context, scalars: ScalarResolver):
        super().__init__(ctx)
        self.scalars = scalars

    def reduction(self, node: ast.Call, scope: Scope, tensor: Callable) -> DataScalar:
        """`dot(a, b)`, `norm(a)`: one scalar per sample of the batch."""
        kind, arity, signature = REDUCTIONS[node.func]
        if len(node.args) != arity:
            self.fail(
                node.span,
                f"{node.func} takes {arity} tensor argument{'s' if arity > 1 else ''}, "
                f"got {len(node.args)}",
                f"write {signature}",
            )
        if not scope.data_allowed:
            self.fail(
                node.span,
                f"{node.func}(...) reads the data of a layer, and an init runs before the first",
                "an init may use input, states, 0 and params",
            )
        if scope.sum_var is not None:
            self.fail(
                node.span,
                f"{node.func}(...) inside a sum: the terms of a sum have fixed coefficients",
                "compute the scaled term as a local first, then sum the local",
            )
        args = tuple(tensor(a, scope, f"an argument of {node.func}") for a in node.args)
        scope.data_spans.append(node.span)
        reduction = ir.Reduction(kind, args)
        return DataScalar(ir.reduction_symbol(0, reduction), (reduction,), node.span)

    def binary(self, node: ast.Binary, left: Value, right: Value, scope: Scope) -> DataScalar:
        """`left op right` of two scalars, one of them or both per-sample."""
        reductions, (a, b) = _merged([left, right])
        if node.op == "/" and isinstance(right, DataScalar):
            self.check_divisor(node, DataScalar(b, reductions, right.span), scope)
        return DataScalar(self.scalars.scalar_binary(node, a, b), reductions, node.span)

    def function(self, node: ast.Call, values: list, scope: Scope) -> DataScalar:
        """`sqrt`, `max`, ... of scalars, one of them or more per-sample."""
        if node.func in INTEGER_FUNCTIONS:
            self.fail(
                node.span,
                f"{node.func} of a per-sample scalar is not supported",
                f"{node.func} is for the layer index, e.g. {node.func}(k/2)",
            )
        reductions, exprs = _merged(values)
        if node.func in DOMAINS and len(exprs) == 1:
            self.check_domain(node, exprs[0], scope)
        return DataScalar(self.scalars.scalar_function(node, exprs), reductions, node.span)

    def check_domain(self, node: ast.Call, arg: sympy.Expr, scope: Scope) -> None:
        """`sqrt(dot(g, x))`, `log(norm(g))`: a warning where some input leaves the
        function's domain (nan, or -inf), as for a division by 0."""
        inside, where = DOMAINS[node.func]
        if getattr(_at_fixed_values(arg, scope), inside):
            return
        text = _clip(self.text(node.args[0]))
        self.report.warn(
            node.args[0].span,
            f"{node.func} of '{text}', which is {where} for some inputs: the layer then "
            f"gives {'nan' if node.func == 'sqrt' else 'nan or -inf'}",
            f"keep it inside: {node.func}(max({text}, 1e-12))",
        )

    def divided(self, node: ast.Binary, form: ir.LinearForm, divisor: DataScalar, scope: Scope):
        """`form / divisor`: each sample's terms divided by its own value."""
        self.check_divisor(node, divisor, scope)
        inverse = DataScalar(1 / divisor.expr, divisor.reductions, divisor.span)
        return data_term(inverse, form, f"1/({self.text(node.right)})")

    def check_divisor(self, node: ast.Binary, divisor: DataScalar, scope: Scope) -> None:
        """A division by a per-sample scalar that can be 0 (`dot(s, y)`, `norm(g)`) warns:
        a sample where it is 0 gets inf or nan. `max(dot(s, y), 1e-12)` is a guard."""
        value = _at_fixed_values(divisor.expr, scope)
        if value.is_positive or value.is_negative:
            return
        text = _clip(self.text(node.right))
        self.report.warn(
            node.right.span,
            f"division by '{text}', which is 0 for some inputs: " "the layer then gives inf or nan",
            f"guard it with a floor, e.g. max({text}, 1e-12), or add a small number",
        )


# Functions whose argument must stay inside a domain: (sympy's assumption, what is outside).
DOMAINS = {"sqrt": ("is_nonnegative", "negative"), "log": ("is_positive", "0 or negative")}


def _at_fixed_values(expr: sympy.Expr, scope: Scope) -> sympy.Expr:
    """`expr` with the fixed params at their values (their signs then known)."""
    return expr.xreplace({p.symbol: p.value for p in scope.params.values() if not p.learnable})
