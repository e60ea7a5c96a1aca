"""Stability conditions in the params, by the Schur-Cohn / Jury criterion.

rho is taken with the params as symbols. Its zero roots and its root at 1 (when 1 is a
root for every value) are factored out; the remainder q must keep its roots in the
closed unit disc, simple on the circle, and away from 1 so that root 1 stays simple:

- degree 1, q = z + c0:            -1 <= c0 <= 1 (and c0 != -1 after factoring z - 1)
- degree 2, q = z^2 + c1 z + c0:   |c0| <= 1, |c1| <= 1 + c0, no double root at +-1,
                                    (and q(1) != 0 after factoring z - 1)

Higher remainders go through the Schur-Cohn reduction: q_{m-1}(z) = (c_m q_m(z) -
c_0 q_m*(z))/z with q_m* the reversed polynomial, and c_m^2 - c_0^2 > 0 at every step is
the condition for every root strictly inside the unit circle. For one param the closed
disc is then exact: a value outside that open region can only satisfy the root condition
where a root of q lies on the circle, i.e. at a real root of the resultant of q and q*,
and each of those finitely many values is checked on its own. With several params the
printed conditions are the strict ones (a note says so). The work is bounded by the size
of the expressions (`MAX_CONDITION_OPS` sympy operations in a step's coefficients,
`MAX_RESULTANT_DEGREE` for the resultant), never by a clock; a bound hit is a `Limit`,
which the certificate turns into a note and a warning.
"""

from __future__ import annotations

from fractions import Fraction

import numpy
import sympy
from mpmath.libmp.libhyper import NoConvergence

from .. import ir, schedules
from ..present import number
from .recurrence import user_names
from .stability import exact_roots, root_condition

Z = sympy.Dummy("z")
MAX_CONDITION_OPS = 300  # sympy count_ops of one Schur-Cohn step's coefficients
MAX_FACTORED_OPS = 150  # larger conditions are printed expanded (factoring them costs more)
MAX_RESULTANT_DEGREE = 64  # degree in the param of the resultant whose roots are checked


class Limit(str):
    """A note that says a bound of the analysis was hit (a warning, not only a note)."""


class _TooLarge(Exception):
    """A Schur-Cohn step or a resultant grew past its bound."""


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
    text = schedules.user_str(x)
    if x.is_number and ("CRootOf" in text or len(text) > 24):  # a root of a cubic or worse
        return number(x)
    return text


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
    return schedules.user_str(region)


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
        return f"{schedules.user_str(user_names(side))} {OPS[type(rel)]} 0".replace("**", "^")
    return schedules.user_str(user_names(rel))


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
        return _high_degree_conditions(coeffs, free)
    try:
        return show_conditions(formula), None
    except (NotImplementedError, ValueError, TypeError) as exc:  # sympy cannot solve it
        return None, Limit(
            f"sympy could not simplify the stability conditions ({type(exc).__name__}): "
            "no symbolic conditions derived"
        )


def _high_degree_conditions(coeffs, free: set) -> tuple[list[str] | None, str | None]:
    """Remainders of degree 3 and more: Schur-Cohn, exact for one param."""
    q, _ = reduced_remainder(coeffs)
    try:
        if len(free) == 1:
            (symbol,) = free
            region = _one_param_region(coeffs, q, symbol)
            return [show_set(region, _name(symbol))], None
        strict = schur_cohn(q)
    except _TooLarge as why:
        return None, Limit(f"{why}: no symbolic conditions derived")
    except (NotImplementedError, ValueError, TypeError, NoConvergence) as exc:
        return None, Limit(
            f"sympy could not reduce the Schur-Cohn conditions of the degree-{q.degree()} "
            f"remainder ({type(exc).__name__}): no symbolic conditions derived"
        )
    names = ", ".join(sorted(_name(x) for x in free))
    shown = sorted(dict.fromkeys(text for d in strict for text in _positive_texts(d)))
    return shown, Limit(
        f"rho has {q.degree()} roots besides 0 and 1 and {len(free)} params ({names}): the "
        "conditions are the Schur-Cohn conditions for those roots strictly inside the unit "
        "circle; values where one reaches the circle are not included"
    )


def _size_checked(values: list, what: str) -> list:
    ops = sum(sympy.count_ops(v) for v in values)
    if ops > MAX_CONDITION_OPS:
        raise _TooLarge(
            f"the Schur-Cohn reduction of rho grew to {ops} operations at {what}, past the "
            f"bound of {MAX_CONDITION_OPS}"
        )
    return values


def schur_cohn(q: sympy.Poly) -> list[sympy.Expr]:
    """D_m = c_m^2 - c_0^2 of every step: all positive iff every root is inside the circle.

    Each step is divided by the gcd of its coefficients (a scale, which the conditions
    do not see, recorded before the division so that a vanishing scale still fails).
    """
    denominator = sympy.lcm_list([sympy.fraction(sympy.cancel(c))[1] for c in q.all_coeffs()])
    c = [sympy.expand(sympy.cancel(x * denominator)) for x in reversed(q.all_coeffs())]
    conditions = []
    while len(c) > 1:
        m = len(c) - 1
        conditions.append(sympy.expand(c[m] ** 2 - c[0] ** 2))
        d = [sympy.expand(c[m] * c[i + 1] - c[0] * c[m - 1 - i]) for i in range(m)]
        scale = sympy.gcd_list(d)
        if scale != 0:
            d = [sympy.cancel(x / scale) for x in d]
        c = _size_checked(d, f"degree {m - 1}")
    return conditions


def _positive_texts(d: sympy.Expr) -> list[str]:
    """`d > 0` as factored relations: a squared factor only needs to be nonzero."""
    if sympy.count_ops(d) > MAX_FACTORED_OPS:
        return [f"{schedules.user_str(user_names(d))} > 0".replace("**", "^")]
    constant, factors = sympy.factor_list(d)
    odd = sympy.Mul(*(f for f, power in factors if power % 2))
    texts = [
        f"{schedules.user_str(user_names(f))} != 0".replace("**", "^")
        for f, power in factors
        if power % 2 == 0
    ]
    if odd.free_symbols:
        sign = ">" if constant > 0 else "<"
        texts.append(f"{schedules.user_str(user_names(odd))} {sign} 0".replace("**", "^"))
    elif constant * odd <= 0:
        texts.append("no value of the params")
    return texts


def _one_param_region(coeffs, q: sympy.Poly, symbol) -> sympy.Set:
    """The values of the param where rho satisfies the root condition, exactly.

    The real values where q has a root on the circle (or drops its degree) cut the line
    into open intervals on which no root crosses the circle: one rational sample decides
    each interval by the Schur-Cohn conditions, and every cut value is checked itself.
    """
    cuts = sorted(_circle_values(q, symbol), key=lambda v: sympy.N(v, 40))
    pieces = []
    bounds = [-sympy.oo, *cuts, sympy.oo]
    for lo, hi in zip(bounds, bounds[1:]):
        sample = _rational_between(lo, hi)
        at = sympy.Poly([sympy.cancel(c.xreplace({symbol: sample})) for c in q.all_coeffs()], Z)
        if all(d > 0 for d in schur_cohn(at)):
            pieces.append(sympy.Interval.open(lo, hi))
    poles = set(_poles(q, symbol))
    pieces.extend(
        sympy.FiniteSet(v) for v in cuts if v not in poles and _root_condition_at(coeffs, symbol, v)
    )
    return sympy.Union(*pieces) if pieces else sympy.S.EmptySet


def _poles(q: sympy.Poly, symbol) -> list:
    """Real values of the param where a coefficient of q is undefined."""
    denominator = sympy.lcm_list([sympy.fraction(sympy.cancel(c))[1] for c in q.all_coeffs()])
    poly = sympy.Poly(denominator, symbol)
    return sympy.real_roots(poly) if poly.degree() > 0 else []


def _rational_between(lo, hi) -> sympy.Rational:
    if lo == -sympy.oo and hi == sympy.oo:
        return sympy.Integer(0)
    if lo == -sympy.oo:
        return sympy.floor(sympy.N(hi, 40)) - 1
    if hi == sympy.oo:
        return sympy.ceiling(sympy.N(lo, 40)) + 1
    if lo.is_Rational and hi.is_Rational:
        return (lo + hi) / 2
    return sympy.nsimplify(sympy.N((lo + hi) / 2, 40), rational=True)


def _circle_values(q: sympy.Poly, symbol) -> list:
    """Real values of the param where q has a root on the unit circle or drops its degree."""
    expr = q.as_expr()
    bound = (
        2
        * q.degree()
        * max(sympy.degree(sympy.fraction(sympy.cancel(c))[0], symbol) for c in q.all_coeffs())
    )
    if bound > MAX_RESULTANT_DEGREE:
        raise _TooLarge(
            f"the resultant that locates rho's roots on the unit circle may reach degree {bound} "
            f"in {_name(symbol)}, past the bound of {MAX_RESULTANT_DEGREE}"
        )
    reverse = sympy.expand(Z ** q.degree() * expr.subs(Z, 1 / Z))
    numerator = sympy.fraction(sympy.cancel(expr))[0]
    rev_numerator = sympy.fraction(sympy.cancel(reverse))[0]
    resultant = sympy.resultant(numerator, rev_numerator, Z)
    lead = sympy.fraction(sympy.cancel(q.LC()))[0]
    found = []
    for poly in (resultant, lead):
        poly = sympy.Poly(sympy.fraction(sympy.cancel(poly))[0], symbol)
        if poly.is_zero:
            raise _TooLarge(
                "q and its reverse share a factor for every value of the param (roots stay on "
                "the circle): the closed-disc conditions are not reduced"
            )
        if poly.degree() > MAX_RESULTANT_DEGREE:
            raise _TooLarge(
                f"the resultant of rho's remainder has degree {poly.degree()} in the param, "
                f"past the bound of {MAX_RESULTANT_DEGREE}"
            )
        found.extend(sympy.real_roots(poly) if poly.degree() > 0 else [])
    return list(dict.fromkeys(found + _poles(q, symbol)))


def _root_condition_at(coeffs, symbol, value) -> bool:
    """The root condition of rho with the param at `value` (exact for a rational value)."""

    at = [sympy.sympify(c).xreplace({symbol: value}) for c in coeffs]
    if all(c.is_Rational for c in at):
        return root_condition(exact_roots(tuple(at))).ok
    try:
        roots = sympy.Poly(list(reversed([sympy.N(c, 60) for c in at])), Z).nroots(
            n=50, maxsteps=200
        )
        far, near = 1e-25, 1e-15
    except NoConvergence:  # a multiple root: float64 roots, clustered ones counted once
        roots = [complex(r) for r in numpy.roots([complex(sympy.N(c)) for c in reversed(at)])]
        far, near = 1e-6, 1e-4
    for i, r in enumerate(roots):
        size = abs(r)  # a 50-digit sympy number, or a complex of the float64 fallback
        if size > 1 + far:
            return False
        if abs(size - 1) <= far and any(abs(r - o) < near for o in roots[i + 1 :]):
            return False
    return True


def region_of(coeffs, symbol: sympy.Symbol) -> sympy.Set | None:
    """The set of values of `symbol` (the only free symbol of `coeffs`) where the root condition holds."""
    formula = region_formula(coeffs)
    if formula is None:
        q, _ = reduced_remainder(coeffs)
        try:
            return _one_param_region(coeffs, q, symbol)
        except (_TooLarge, NotImplementedError, ValueError, TypeError, NoConvergence):
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
