"""Linear combinations into kernels, their coefficients folded.

Every assignment of the update is a linear combination of tensors. Here each one is
lowered to the fewest elementwise kernels:

* a single term with coefficient 1 is an alias (no kernel);
* a term with coefficient 1 starts the sum, every further term costs one fused
  kernel: `torch.add(a, b, alpha=c)` (fixed c) or `torch.addcmul(a, c, b)` (c a
  tensor, e.g. a learnable param);
* two coefficients that sum to 1 are one `torch.lerp(a, b, w)`;
* otherwise the first term is scaled (`torch.mul`) and the rest are added in place
  into that fresh temporary, which autograd never saved.

Coefficients are folded, but keep the rule's names: a fixed param becomes a named
constant of the forward (`beta = 0.9`, then `torch.lerp(x_next, x, -beta)`), a
`k`-dependent one a per-layer table of floats named after what it holds
(`self.neg_beta[k]`), a learnable one is computed once per call from its raw parameter
(softplus / scaled sigmoid reparametrization).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import sympy

from .. import ir
from ..present import number
from . import plan
from .lower_schedules import Schedule
from .lower_scope import Scope, pyexpr, torch_expr, user_text

ONE = ir.ONE


class CoefKind(Enum):
    NUMBER = "number"  # a fixed number (possibly written with fixed params' names)
    SCHEDULE = "schedule"  # fixed, depends on k: a per-layer table
    TENSOR = "tensor"  # holds learnable params: a 0-dim tensor computed in forward


@dataclass(frozen=True)
class Coef:
    """A folded coefficient.

    `value` has the fixed params substituted (decisions are made on it: is it 1, do two
    coefficients sum to 1); `expr` keeps them as symbols, so that the code can print the
    coefficient in the rule's names.
    """

    value: sympy.Expr
    expr: sympy.Expr
    kind: CoefKind


def coef_name(expr: sympy.Expr) -> str:
    """A name for a coefficient from the params it holds: beta, neg_beta, rho_t; else coef."""
    if expr.is_Symbol:
        return ir.symbol_param(expr) or expr.name
    if expr.is_Mul:
        factor, rest = expr.as_coeff_Mul()
        if factor == -1:
            inner = coef_name(rest)
            return "coef" if inner == "coef" else f"neg_{inner}"
        if factor == 1 and all(a.is_Symbol for a in expr.args):
            return "_".join(coef_name(a) for a in sorted(expr.args, key=str))
    return "coef"


def _collected(expr: sympy.Expr, symbols: list[sympy.Symbol]) -> sympy.Expr:
    """`expr` as a sum of monomials in `symbols`, each coefficient simplified, where it is
    a polynomial in them; else `expr` itself."""
    try:
        poly = sympy.Poly(expr, *symbols)
    except sympy.PolynomialError:
        return expr
    monomials = []
    for powers, coefficient in poly.terms():
        monomial = sympy.Mul(*(s**n for s, n in zip(symbols, powers)))
        monomials.append(ir.simplified(sympy.sympify(coefficient)) * monomial)
    return sympy.Add(*monomials)


class Terms(Scope):
    """Coefficients folded (numbers, named constants, per-layer tables, tensors) and
    linear combinations of named tensors lowered to kernels."""

    def __init__(self, net: ir.Network):
        super().__init__(net)
        # The ops before any input is read (constants, param values, shared blocks) and
        # those at the top of each layer (its blocks, its k-dependent tensor coefficients).
        self.prologue: list[plan.Op] = []
        self.layer_setup: list[plan.Op] = []
        self.schedules: list[Schedule] = []
        self._schedule_of: dict[sympy.Expr, str] = {}
        self._call_tensor_of: dict[sympy.Expr, str] = {}
        self._layer_tensor_of: dict[sympy.Expr, str] = {}
        self.block_outputs: set[str] = set()  # names bound to a block's output
        self.matrix_products: set[str] = set()  # those of an operator: a bare matmul

    # ------------------------------------------------------------ coefficients
    def coef(self, expr: sympy.Expr) -> Coef:
        expr = sympy.sympify(expr)
        value = ir.simplified(expr.subs(self.fixed)) if expr.free_symbols else expr
        symbols = value.free_symbols
        if not symbols:
            return Coef(value, expr, CoefKind.NUMBER)
        if not any(s in self.learnable for s in symbols):
            return Coef(value, expr, CoefKind.SCHEDULE)
        return Coef(value, expr, CoefKind.TENSOR)

    def _named(self, expr: sympy.Expr) -> bool:
        """Whether `expr` can be printed with the forward's named constants."""
        return bool(expr.free_symbols) and expr.free_symbols <= set(self.constants)

    def scalar(self, c: Coef) -> plan.Scalar:
        """The whole coefficient as an operand (a float, a constant expression, a tensor)."""
        if c.kind is CoefKind.NUMBER:
            return self.number(c.expr, c.value)
        if c.kind is CoefKind.SCHEDULE:
            return plan.Scalar(self.schedule(c))
        var = self.tensor_coef(c)
        return plan.Scalar(var, (var,))

    def number(self, expr: sympy.Expr, value: sympy.Expr) -> plan.Scalar:
        if not self._named(expr):
            return plan.Scalar.number(value)
        names = {s: self.constant_var[s] for s in expr.free_symbols}
        return plan.Scalar(pyexpr(expr, names), tuple(sorted(names.values())))

    def schedule(self, c: Coef) -> str:
        """A fixed coefficient that depends on k: a per-layer table of floats."""
        if c.value not in self._schedule_of:
            attr = self.attrs.create(coef_name(c.expr))
            shown = user_text(c.value)
            if c.expr != c.value:
                shown = f"{user_text(c.expr)} = {shown}"
            self.schedules.append(Schedule(attr, pyexpr(c.value, {ir.K: "k"}), shown))
            self._schedule_of[c.value] = f"self.{attr}[k]"
        return self._schedule_of[c.value]

    def _tensor_names(self, expr: sympy.Expr) -> dict[sympy.Symbol, str]:
        names = {}
        for s in expr.free_symbols:
            if s == ir.K:
                names[s] = "k"
            elif s in self.learnable:
                p = self.learnable[s]
                names[s] = f"{self.param_var[p.name]}[k]" if p.per_layer else self.param_var[p.name]
            elif s in self.constants:
                names[s] = self.constant_var[s]
        return names

    def tensor_coef(self, c: Coef) -> str:
        """A coefficient with learnable params: computed once per call, or once per layer."""
        expr = (
            c.expr
            if not (c.expr.free_symbols - set(self.constants) - set(self.learnable))
            else None
        )
        printed = expr if expr is not None else c.value
        symbols = printed.free_symbols
        learnable = [self.learnable[s] for s in symbols if s in self.learnable]
        per_layer = ir.K in symbols or any(p.per_layer for p in learnable)
        if printed.is_Symbol and printed in self.learnable and not per_layer:
            return self.param_var[self.learnable[printed].name]
        table, ops = (
            (self._layer_tensor_of, self.layer_setup)
            if per_layer
            else (self._call_tensor_of, self.prologue)
        )
        if c.value not in table:
            var = self.ns.create(coef_name(printed) if expr is not None else "coef")
            printed, tables = self._layer_tables(printed)
            names = {**self._tensor_names(printed), **tables}
            uses = tuple(sorted({v.split("[")[0] for v in names.values() if v != "k"} - {"self"}))
            ops.append(plan.ScalarDef(var, plan.Scalar(pyexpr(printed, names), uses)))
            table[c.value] = var
        return table[c.value]

    def _layer_tables(
        self, expr: sympy.Expr, tensors: set | None = None
    ) -> tuple[sympy.Expr, dict[sympy.Symbol, str]]:
        """`expr` with each part that holds no learnable param but depends on k (`1 - tk`,
        `1/(k + 1)`) read from a per-layer table (`self.coef[k]`), and those tables' names.

        The forward does not know the values of a recursive schedule (`__init__` computes
        them), and its `k` counts the layers of the module, not from `start`: the tables
        hold the values at the layers start, ..., start + depth - 1, as every fixed
        per-layer coefficient does. Written as a polynomial in the learnable params where it
        is one (`(k*s + s + 1)/(k + 1)` is `s + 1/(k + 1)`). `tensors`: the symbols that
        are tensors (default: the learnable params)."""
        if ir.K not in expr.free_symbols:
            return expr, {}
        learnable = set(self.learnable) if tensors is None else tensors
        tables: dict[sympy.Symbol, str] = {}

        def visit(e: sympy.Expr) -> sympy.Expr:
            if not e.free_symbols & learnable:
                if ir.K not in e.free_symbols:
                    return e
                symbol = sympy.Dummy(f"table{len(tables)}")
                tables[symbol] = self.schedule(Coef(e, e, CoefKind.SCHEDULE))
                return symbol
            if not e.args:
                return e
            if e.is_Add or e.is_Mul:
                fixed = [a for a in e.args if not a.free_symbols & learnable]
                rest = [visit(a) for a in e.args if a.free_symbols & learnable]
                return e.func(visit(e.func(*fixed)), *rest)
            return e.func(*(visit(a) for a in e.args))

        return visit(_collected(expr, sorted(expr.free_symbols & learnable, key=str))), tables

    def data_factor(self, factor: sympy.Expr, reductions: dict[sympy.Symbol, str]) -> plan.Scalar:
        """The factor of a `DataScaled` term as a tensor expression: its reductions by
        their variables (`dot_s_r`), learnable params by theirs, parts fixed per layer
        from per-layer tables, constants by name; functions of tensors are torch's."""
        per_layer = {s: v for s, v in self.fixed.items() if s not in self.constants}
        tensors = set(reductions) | set(self.learnable)
        expr, tables = self._layer_tables(factor.xreplace(per_layer), tensors)
        names = {**self._tensor_names(expr), **tables, **reductions}
        tensor_names = {names[s] for s in expr.free_symbols & tensors}
        uses = {v.split("[")[0] for v in names.values() if v != "k" and not v.startswith("self.")}
        return plan.Scalar(torch_expr(expr, names, tensor_names), tuple(sorted(uses)))

    def _tensor_parts(self, c: Coef) -> tuple[str, plan.Scalar | None]:
        """c = factor * base with base holding the learnable params, factor fixed."""
        learnable = [s for s in c.expr.free_symbols if s in self.learnable]
        factor, base = c.expr.as_independent(*learnable, as_Add=False)
        if (
            factor == 0
            or ir.K in factor.free_symbols
            or not (factor.is_number or self._named(factor))
        ):
            factor, base = ONE, c.expr
        base_coef = self.coef(base)
        factor_value = ir.simplified(factor.subs(self.fixed))
        if factor_value == 0:  # pragma: no cover - a zero term never reaches lowering
            factor, factor_value, base_coef = ONE, ONE, c
        value = None if factor_value == 1 else self.number(factor, factor_value)
        return self.tensor_coef(base_coef), value

    # ------------------------------------------------------------ combinations
    def combine(self, target: str, terms: list[tuple[str, Coef]], like: str) -> list[plan.Op]:
        """Ops that set `target` to sum(c * v) with the fewest kernels (module docstring)."""
        if not terms:
            return [plan.Zeros(target, like)]
        terms = list(terms)
        shown = self._form_text(target, terms)
        # Decisions on the coefficients as written (the code prints them with the rule's
        # names): heavy ball with t = beta = 0.5 must not become lerp(x, T_x, -t).
        first = next((t for t in terms if t[1].expr == 1), None)
        if first is not None:
            terms.remove(first)
            if not terms:
                return [] if first[0] == target else [plan.Alias(target, first[0])]
            var, c = terms.pop(0)
            start = self.add(target, first[0], var, c)
        else:
            pair = self._lerp_pair(terms)
            if pair is not None:
                (a, _), (b, cb) = pair
                terms.remove(pair[0])
                terms.remove(pair[1])
                start = plan.Lerp(target, a, b, self.scalar(cb), self._cast(a, b))
            else:
                var, c = terms.pop(0)
                start = plan.Scale(target, var, self.scalar(c))
        ops: list[plan.Op] = []
        if terms or not isinstance(start, (plan.AddAlpha, plan.AddCMul)):
            # A fused statement: say what it computes in the code's names.
            ops.append(plan.Comment(shown))
        if any(var == target for var, _ in terms):
            # The first op rebinds `target`; a later term still reads its old value.
            fresh = self.ns.create(f"{target}_new")
            ops.append(start.retargeted(fresh))
            ops += [self.add(fresh, fresh, var, c, inplace=True) for var, c in terms]
            return ops + [plan.Alias(target, fresh)]
        ops.append(start)
        ops += [self.add(target, target, var, c, inplace=True) for var, c in terms]
        return ops

    def _form_text(self, target: str, terms: list[tuple[str, Coef]]) -> str:
        parts = []
        for var, c in terms:
            expr = c.expr
            if expr == 1:
                parts.append(f"+ {var}")
            elif expr == -1:
                parts.append(f"- {var}")
            else:
                negative = expr.as_coeff_Mul()[0] < 0
                size = -expr if negative else expr
                if size.is_number:
                    text = number(size)
                else:
                    plain = size.is_Symbol or (
                        size.is_Mul and all(a.is_Symbol or a.is_number for a in size.args)
                    )
                    text = user_text(size) if plain else f"({user_text(size)})"
                parts.append(f"{'-' if negative else '+'} {text}*{var}")
        text = " ".join(parts)
        text = text[2:] if text.startswith("+ ") else "-" + text[2:]
        return f"{target} = {text}"

    def _cast(self, start: str, end: str) -> str | None:
        """Which lerp operand is a block output, to take the other's dtype (plan.Lerp)."""
        outputs = (start in self.block_outputs, end in self.block_outputs)
        return {(True, False): "start", (False, True): "end"}.get(outputs)

    def _lerp_pair(self, terms):
        """Two terms whose coefficients sum to 1, the one with the simpler weight second."""
        for i, a in enumerate(terms):
            for b in terms[i + 1 :]:
                if sympy.simplify(a[1].expr + b[1].expr - 1) == 0:
                    return (a, b) if self._simpler(b[1].value, a[1].value) else (b, a)
        return None

    @staticmethod
    def _simpler(x: sympy.Expr, y: sympy.Expr) -> bool:
        if x.is_number and y.is_number:
            return abs(x) <= abs(y)
        return sympy.count_ops(x) <= sympy.count_ops(y)

    def add(self, target: str, a: str, b: str, c: Coef, inplace: bool = False) -> plan.Op:
        """`a + c*b` as one kernel (in place into `target` when `inplace`, then a is target)."""
        if c.kind is CoefKind.TENSOR:
            base, value = self._tensor_parts(c)
            return plan.AddCMul(target, a, base, b, value, inplace)
        if c.value == 1:
            return plan.AddAlpha(target, a, b, None, inplace=inplace)
        if c.value == -1:
            return plan.AddAlpha(target, a, b, None, subtract=True, inplace=inplace)
        scale_first = b in self.matrix_products
        return plan.AddAlpha(target, a, b, self.scalar(c), inplace=inplace, scale_first=scale_first)
