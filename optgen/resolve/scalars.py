"""Scalar expressions: numbers, the values of params, interval bounds, options and block
arguments, the functions of scalars (sqrt, exp, log, cos, sin, floor, ceil, abs, min, max),
the constant pi, powers, the remainder of integers (`k % 4`), the read of a schedule at
another layer (`tk[k+1]`), and the rule that every number is a float64."""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation
from fractions import Fraction

import sympy

from .. import ir, schedules
from ..syntax import ast
from .context import Job, _clip, _did_you_mean

MAX_EXPONENT = 400
# A coefficient must be a normal float64 number: the module computes in floating point.
MAX_EXPONENT_FLOAT = 307
MAX_FLOAT = sympy.Rational(10) ** MAX_EXPONENT_FLOAT
MIN_FLOAT = sympy.Rational(1, 10**MAX_EXPONENT_FLOAT)
# Named constants of every scalar expression (reserved: no declaration may take the name).
CONSTANTS = {"pi": sympy.pi}


class ScalarResolver(Job):
    """Scalar expressions whose names are given (`allowed`), exact and in float64 range."""

    def number(self, node: ast.Number) -> sympy.Rational:
        try:
            dec = Decimal(node.text)
        except InvalidOperation:  # pragma: no cover - the grammar only lets decimals through
            self.fail(node.span, f"'{node.text}' is not a number")
        if dec != 0 and abs(dec.adjusted()) > MAX_EXPONENT:
            self.fail(
                node.span,
                f"the number {node.text} is out of range",
                f"use a magnitude between 1e-{MAX_EXPONENT_FLOAT} and 1e{MAX_EXPONENT_FLOAT}",
            )
        return self.finite(sympy.Rational(Fraction(dec)), node)

    def scalar(self, node, allowed: dict[str, sympy.Expr], what: str) -> sympy.Expr:
        """A scalar expression whose names must be keys of `allowed`."""
        value = ast.fold(
            node,
            lambda leaf: self.scalar_leaf(leaf, allowed, what),
            lambda neg, operand: -operand,
            self.scalar_binary,
        )
        return self.finite(value, node)

    def scalar_leaf(self, node, allowed: dict[str, sympy.Expr], what: str) -> sympy.Expr:
        if isinstance(node, ast.Number):
            return self.number(node)
        if isinstance(node, ast.Call) and node.func in schedules.SCALAR_FUNCTIONS:
            args = [self.scalar(a, allowed, what) for a in node.args]
            return self.scalar_function(node, args)
        if isinstance(node, ast.Indexed) and node.id in allowed and node.id != "k":
            return self.schedule_read(node, allowed[node.id])
        if isinstance(node, ast.Name):
            if node.id in allowed:
                return allowed[node.id]
            if node.id in CONSTANTS:
                return CONSTANTS[node.id]
            self.fail(
                node.span,
                f"'{node.id}' cannot be used in {what}",
                _did_you_mean(node.id, allowed)
                or f"{what} may use numbers{''.join(', ' + n for n in sorted(allowed))}",
            )
        self.fail(
            node.span,
            f"'{self.text(node)}' cannot be used in {what}",
            f"{what} may use numbers{''.join(', ' + n for n in sorted(allowed))}",
        )

    def scalar_binary(self, node: ast.Binary, left: sympy.Expr, right: sympy.Expr) -> sympy.Expr:
        if node.op == "^":
            return self.power(node, left, right)
        if node.op == "/":
            if right == 0:
                self.fail(node.right.span, "division by zero")
            return self.finite(left / right, node)
        if node.op == "%":
            return self.remainder(node, left, right)
        return self.finite({"+": left + right, "-": left - right, "*": left * right}[node.op], node)

    def scalar_function(self, node: ast.Call, args: list[sympy.Expr]) -> sympy.Expr:
        """`sqrt(a)`, `exp(a)`, `log(a)`, `min(a, b, ...)`, `max(a, b, ...)` of scalars."""
        spec = schedules.SCALAR_FUNCTIONS[node.func]
        fewest, most = spec.arity
        if len(args) < fewest or (most is not None and len(args) > most):
            count = f"{fewest}" if fewest == most else f"at least {fewest}"
            self.fail(
                node.span,
                f"{node.func} takes {count} argument{'s' if fewest > 1 else ''}, got {len(args)}",
                f"write {spec.signature}",
            )
        if node.func == "exp" and not args[0].free_symbols and args[0] > 710:
            self.fail(node.span, f"'{_clip(self.text(node))}' overflows a float64")
        return self.finite(spec.build(*args), node)

    def remainder(self, node: ast.Binary, left: sympy.Expr, right: sympy.Expr) -> sympy.Expr:
        """`a % b` of integers (k, whole numbers, floor and ceil of scalars): the remainder
        of floor division, as Python's, with the sign of b (`-1 % 5` is 4)."""
        for operand, value in ((node.left, left), (node.right, right)):
            if value.is_integer is not True:
                self.fail(
                    operand.span,
                    f"'%' takes integers, but '{_clip(self.text(operand))}' is not one",
                    "use k, whole numbers, or floor(...) / ceil(...) of a scalar, e.g. k % 4",
                )
        if right == 0:
            self.fail(node.right.span, "remainder of a division by zero")
        return self.finite(sympy.Mod(left, right), node)

    def power(self, node: ast.Binary, base: sympy.Expr, exponent: sympy.Expr) -> sympy.Expr:
        """`base ^ exponent`, refused before sympy computes a number past float64."""
        if not exponent.free_symbols and abs(exponent) > MAX_EXPONENT and base.free_symbols:
            self.fail(node.right.span, f"the exponent {exponent} is too large")
        if not (base.free_symbols or exponent.free_symbols) and base != 0:
            if abs(base) != 1 and abs(exponent) > 10**6:  # 2^2^2^2^2^2: no float holds it
                self.fail(
                    node.span, f"'{_clip(self.text(node))}' is outside the range of a float64"
                )
            size = float(exponent) * math.log10(abs(float(base))) if abs(base) != 1 else 0.0
            if abs(size) > MAX_EXPONENT_FLOAT:
                self.fail(
                    node.span,
                    f"'{_clip(self.text(node))}' is about 1e{math.floor(size)}, outside the range of a float64",
                )
        if base == 0 and not exponent.free_symbols and exponent < 0:
            self.fail(node.span, "division by zero: 0 raised to a negative power")
        return self.finite(sympy.Pow(base, exponent), node)

    def schedule_read(self, node: ast.Indexed, value: sympy.Expr) -> sympy.Expr:
        """`tk[k+1]`, `tk[k]`, `tk[3]`: a schedule at another layer.

        Inside the recursion of tk, `tk` and `tk[k]` are the previous value, `tk[0]` its
        start; `tk[k+1]` and later lie ahead of the value being defined."""
        index = self.scalar(node.index, {"k": ir.K}, "an index")
        offset = sympy.expand(index - ir.K) if ir.K in index.free_symbols else None
        own = self.ctx.recursion is not None and self.ctx.recursion[0] == node.id
        shape_ok = (offset is not None and offset.is_Integer and (offset >= 0 or own)) or (
            offset is None and index.is_Integer and index >= 0
        )
        if not shape_ok:
            self.fail(
                node.index.span,
                f"unsupported index '{self.text(node.index)}' of schedule '{node.id}'",
                f"read {node.id}[k], {node.id}[k+1], ... or a fixed layer such as {node.id}[0]",
            )
        if self.ctx.recursion is not None and self.ctx.recursion[0] == node.id:
            if offset is not None and offset > 0:
                self.fail(
                    node.span,
                    f"the recursion of {node.id} refers forward: '{self.text(node)}' is not known "
                    f"when {node.id}[k+1] is computed",
                    f"write {node.id}[k+1] in terms of {node.id} (= {node.id}[k]), k and fixed params",
                )
            if offset == 0:
                return schedules.PREVIOUS
            if index == 0:
                return self.ctx.recursion[1]
            if offset is not None and -offset <= schedules.MAX_LAG:
                return schedules.lagged(int(-offset))  # tk[k-1]: tk[0] before it exists
            if offset is not None:
                self.fail(
                    node.index.span,
                    f"lag {offset} is too deep",
                    f"a recursion reads at most {schedules.MAX_LAG} values back",
                )
            self.fail(
                node.index.span,
                f"the recursion of {node.id} can only read {node.id}[k], {node.id}[k-1], ..."
                f" and {node.id}[0]",
            )
        if ir.K not in value.free_symbols:
            self.fail(
                node.span,
                f"param '{node.id}' does not depend on k; it has one value, write {node.id}",
            )
        return value.xreplace({ir.K: index})

    def finite(self, value: sympy.Expr, node) -> sympy.Expr:
        """`value`, when it is a float64 number (or holds symbols); an error otherwise.

        Numbers are exact rationals here, but the module computes in floating point: a
        coefficient past float64 (1e200*1e200) would be written as inf, and the
        certificate would reason about a rule the module does not run. A number below the
        smallest float64 (1e-200*1e-200) is zero there; it is refused alike."""
        if not value.free_symbols and not value.is_Rational:
            return self.finite_number(value, node)
        numbers = value.atoms(sympy.Rational) if value.free_symbols else {value}
        for number in numbers:
            magnitude = abs(number)
            if number == 0 or MIN_FLOAT <= magnitude <= MAX_FLOAT:
                continue
            # math.log10 of the exact integers: sympy's log of a 400-digit number is slow.
            shown = math.floor(math.log10(magnitude.p) - math.log10(magnitude.q))
            self.fail(
                node.span,
                f"'{_clip(self.text(node))}' is about 1e{shown}, outside the range of a float64",
                f"keep every number and product of numbers between 1e-{MAX_EXPONENT_FLOAT} "
                f"and 1e{MAX_EXPONENT_FLOAT} in magnitude",
            )
        return value

    def finite_number(self, value: sympy.Expr, node) -> sympy.Expr:
        """A constant holding sqrt, exp, log, min, max or a rational power (`finite`)."""
        if value.has(sympy.zoo, sympy.nan, sympy.oo, -sympy.oo) or not value.is_finite:
            self.fail(node.span, f"'{_clip(self.text(node))}' is not a finite number")
        if value.is_real is False or (value.is_real is None and sympy.im(value.evalf()) != 0):
            self.fail(node.span, f"'{_clip(self.text(node))}' is not a real number")
        magnitude = abs(value.evalf(30))
        if magnitude != 0 and not (MIN_FLOAT <= magnitude <= MAX_FLOAT):
            shown = math.floor(float(sympy.log(magnitude, 10)))
            self.fail(
                node.span,
                f"'{_clip(self.text(node))}' is about 1e{shown}, outside the range of a float64",
            )
        return value
