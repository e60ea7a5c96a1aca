"""Stability conditions in the params, by the Schur-Cohn / Jury criterion.

rho is taken with the params as symbols. Its zero roots and its root at 1 (when 1 is a
root for every value) are factored out; the remainder q must keep its roots in the
closed unit disc, simple on the circle, and away from 1 so that root 1 stays simple:

- degree 1, q = z + c0:            -1 <= c0 <= 1 (and c0 != -1 after factoring z - 1)
- degree 2, q = z^2 + c1 z + c0:   |c0| <= 1, |c1| <= 1 + c0, no double root at +-1,
                                    (and q(1) != 0 after factoring z - 1)

Higher remainders are left to the numeric check (`conditions` is null then).
"""

from __future__ import annotations

from fractions import Fraction

import sympy

from .. import ir
from .recurrence import user_names

Z = sympy.Dummy("z")


def _poly(coeffs) -> sympy.Poly:
    return sympy.Poly(list(reversed(coeffs)), Z)


def _is_zero(expr) -> bool:
    return sympy.simplify(expr) == 0


def reduced_remainder(coeffs) -> tuple[sympy.Poly, bool]:
    """rho without its zero roots and, when 1 is always a root, without z - 1 (and whether it was)."""
    q = _poly(coeffs)
    while q.degree() > 0 and _is_zero(q.eval(0)):
        q = sympy.Poly(sympy.cancel(q.as_expr() / Z), Z)
    if q.degree() > 0 and _is_zero(q.eval(1)):
        quotient, _ = sympy.div(q, sympy.Poly(Z - 1, Z))
        return sympy.Poly(sympy.cancel(quotient.as_expr()), Z), True
    return q, False


def root_condition_formula(q: sympy.Poly, one_factored: bool) -> sympy.Basic | None:
    """The root condition on monic q as a sympy Boolean in its coefficients; None above degree 2."""
    coeffs = [sympy.cancel(c) for c in q.all_coeffs()]
    lead = coeffs[0]
    coeffs = [sympy.cancel(c / lead) for c in coeffs]
    degree = q.degree()
    if degree == 0:
        return sympy.true
    if degree == 1:
        c0 = coeffs[1]
        cond = sympy.And(c0 >= -1, c0 <= 1)
        return sympy.And(cond, sympy.Ne(c0, -1)) if one_factored else cond
    if degree == 2:
        c1, c0 = coeffs[1], coeffs[2]
        cond = sympy.And(
            c0 >= -1,
            c0 <= 1,
            c1 <= 1 + c0,
            c1 >= -(1 + c0),
            sympy.Not(sympy.And(sympy.Eq(c0, 1), sympy.Eq(c1, 2))),  # double root at -1
            sympy.Not(sympy.And(sympy.Eq(c0, 1), sympy.Eq(c1, -2))),  # double root at 1
        )
        return sympy.And(cond, sympy.Ne(1 + c1 + c0, 0)) if one_factored else cond
    return None


def region_formula(coeffs) -> sympy.Basic | None:
    q, one_factored = reduced_remainder(coeffs)
    return root_condition_formula(q, one_factored)


# ---------------------------------------------------------------- printing
def show_number(x: sympy.Expr) -> str:
    if x.is_Rational:
        frac = Fraction(int(x.p), int(x.q))
        den = frac.denominator
        while den % 2 == 0:
            den //= 2
        while den % 5 == 0:
            den //= 5
        if den == 1:
            text = f"{float(frac):.15g}"
            return text
        return f"{frac.numerator}/{frac.denominator}"
    return sympy.sstr(x)


def _show_interval(iv: sympy.Interval, name: str) -> str:
    lo, hi = iv.start, iv.end
    lo_op = "<" if iv.left_open else "<="
    hi_op = "<" if iv.right_open else "<="
    if lo == -sympy.oo and hi == sympy.oo:
        return f"any {name}"
    if lo == -sympy.oo:
        return f"{name} {hi_op} {show_number(hi)}"
    if hi == sympy.oo:
        return f"{name} {'>' if iv.left_open else '>='} {show_number(lo)}"
    return f"{show_number(lo)} {lo_op} {name} {hi_op} {show_number(hi)}"


def show_set(region: sympy.Set, name: str) -> str:
    """`-1 <= beta < 1`, `beta < 0 or beta > 2`, ..."""
    if region == sympy.S.EmptySet:
        return f"no value of {name}"
    if region == sympy.S.Reals:
        return f"any {name}"
    if isinstance(region, sympy.Interval):
        return _show_interval(region, name)
    if isinstance(region, sympy.FiniteSet):
        return " or ".join(f"{name} = {show_number(v)}" for v in region.args)
    if isinstance(region, sympy.Union):
        return " or ".join(show_set(part, name) for part in region.args)
    if isinstance(region, sympy.Complement) and isinstance(region.args[1], sympy.FiniteSet):
        holes = ", ".join(f"{name} != {show_number(v)}" for v in region.args[1].args)
        return f"{show_set(region.args[0], name)}, {holes}"
    return sympy.sstr(region)


OPS = {sympy.Ne: "!=", sympy.Eq: "=", sympy.Le: "<=", sympy.Lt: "<", sympy.Ge: ">=", sympy.Gt: ">"}


def _show_relation(rel: sympy.Basic) -> str:
    """`rho*t*(rho*t - 2) <= 0`: one side moved over and factored, in the user's names."""
    if isinstance(rel, sympy.Or):
        return " or ".join(_show_relation(a) for a in rel.args)
    if isinstance(rel, sympy.And):
        return " and ".join(_show_relation(a) for a in rel.args)
    if isinstance(rel, sympy.Not):
        return f"not ({_show_relation(rel.args[0])})"
    if type(rel) in OPS:
        side = sympy.factor(rel.lhs - rel.rhs)
        return f"{sympy.sstr(user_names(side))} {OPS[type(rel)]} 0".replace("**", "^")
    return sympy.sstr(user_names(rel))


def _name(symbol: sympy.Symbol) -> str:
    return ir.symbol_param(symbol) or symbol.name


def _one_product(formula: sympy.Basic) -> tuple[sympy.Basic, sympy.Symbol] | None:
    """When the formula only depends on the product of its symbols (rho*t), rewrite it in that product."""
    symbols = sorted(formula.free_symbols, key=lambda s: s.name)
    product = sympy.Symbol("*".join(_name(s) for s in symbols), real=True)
    first, rest = symbols[0], symbols[1:]
    rewritten = formula.subs(first, product / sympy.Mul(*rest))
    rewritten = rewritten.xreplace(
        {a: sympy.simplify(a) for a in rewritten.atoms(sympy.core.relational.Relational)}
    )
    return (rewritten, product) if rewritten.free_symbols == {product} else None


def show_conditions(formula: sympy.Basic) -> list[str]:
    """One string per condition, in the user's param names."""
    if formula == sympy.true:
        return []
    if formula == sympy.false:
        return ["no value of the params"]
    symbols = sorted(formula.free_symbols, key=lambda s: s.name)
    if len(symbols) == 1:
        return [show_set(formula.as_set().intersect(sympy.S.Reals), _name(symbols[0]))]
    single = _one_product(formula)
    if single is not None:
        rewritten, product = single
        return [show_set(rewritten.as_set().intersect(sympy.S.Reals), product.name)]
    formula = sympy.simplify_logic(formula) if len(symbols) <= 3 else formula
    parts = formula.args if isinstance(formula, sympy.And) else (formula,)
    return sorted(_show_relation(p) for p in parts)


def stability_conditions(coeffs) -> tuple[list[str] | None, str | None]:
    """Conditions for the root condition, as strings; or None and why they are not derived."""
    free = set().union(*(sympy.sympify(c).free_symbols for c in coeffs))
    if not free:
        return [], None
    if ir.K in free:
        return (
            None,
            "rho depends on k directly: no symbolic conditions derived (see the per-layer figures)",
        )
    formula = region_formula(coeffs)
    if formula is None:
        return None, "rho has more than two roots besides 0 and 1: no symbolic conditions derived"
    try:
        return show_conditions(formula), None
    except (NotImplementedError, ValueError, TypeError) as exc:  # sympy cannot solve it
        return None, f"sympy could not simplify the stability conditions ({type(exc).__name__})"


def region_of(coeffs, symbol: sympy.Symbol) -> sympy.Set | None:
    """The set of values of `symbol` (the only free symbol of `coeffs`) where the root condition holds."""
    formula = region_formula(coeffs)
    if formula is None:
        return None
    try:
        return (
            sympy.simplify_logic(formula).as_set().intersect(sympy.S.Reals)
            if formula.free_symbols
            else (sympy.S.Reals if formula else sympy.S.EmptySet)
        )
    except (NotImplementedError, ValueError, TypeError):
        return None


def bound_set(bound: ir.Bound) -> sympy.Set:
    lo = bound.lo if bound.lo is not None else -sympy.oo
    hi = bound.hi if bound.hi is not None else sympy.oo
    return sympy.Interval(
        lo, hi, not bound.lo_closed or bound.lo is None, not bound.hi_closed or bound.hi is None
    )
