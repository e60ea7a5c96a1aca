"""Roots, zero-stability, consistency and the effective step of one layer's recurrence.

Everything here is exact where the coefficients are numbers: the characteristic
polynomial has rational coefficients, it is split into square-free factors over Q, and
each factor's roots are found to 50 digits. Only the printed figures are rounded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy
import sympy

from ..present import number, root_text
from .recurrence import BlockCall, Recurrence

Z = sympy.Dummy("z")
DIGITS = 50
TOL = sympy.Float("1e-30", DIGITS)  # |root| - 1 below this counts as on the unit circle
# mpmath's 50-digit roots cost O(d^2) per sweep and take seconds from degree 64 on: a
# square-free factor of higher degree gets float64 roots (companion eigenvalues, numpy),
# with a tolerance a float64 root resolves. A limit: the certificate says so.
EXACT_ROOT_DEGREE = 32
FLOAT_TOL = sympy.Float("1e-9", DIGITS)
NAMES = {2: "double", 3: "triple", 4: "quadruple"}


# ---------------------------------------------------------------- numbers of the JSON (printing: optgen.present)
def json_float(x) -> float:
    """A plain float rounded to 12 significant digits, never -0.0."""
    value = float(f"{float(x):.12g}")
    return 0.0 if value == 0 else value


# ---------------------------------------------------------------- roots
@dataclass(frozen=True)
class Root:
    re: sympy.Float
    im: sympy.Float
    multiplicity: int
    factor: sympy.Poly  # the square-free factor of rho it is a root of
    exact: bool = True  # False: a float64 root of a factor above EXACT_ROOT_DEGREE

    @property
    def modulus(self) -> sympy.Float:
        return sympy.sqrt(self.re**2 + self.im**2).evalf(DIGITS)

    @property
    def tolerance(self) -> sympy.Float:
        return TOL if self.exact else FLOAT_TOL

    @property
    def on_circle(self) -> bool:
        return abs(self.modulus - 1) <= self.tolerance

    @property
    def outside(self) -> bool:
        return self.modulus - 1 > self.tolerance

    def show(self) -> str:
        return root_text(self.re, self.im)


def charpoly(matrix: sympy.Matrix) -> tuple[sympy.Expr, ...]:
    """Monic characteristic polynomial of `matrix`, coefficients lowest degree first.

    Every function application of an entry (a `Piecewise`: the term a sum from layer
    lo > 0 gains at layer lo; a recursive schedule `tk(k)`; `exp`, `min`) stands as a
    symbol while the polynomial is computed: sympy's charpoly orders the factors it finds
    by comparing their coefficients, and with such a function among them their domain is
    sympy's expressions, where a comparison may have no truth value (TypeError, "cannot
    determine truth value of Relational"). The coefficients are polynomials in the
    entries, so this is exact."""
    # So does a power that is not a polynomial in k (`0.9**k`, `sqrt(k + 1)`).
    powers = {p for p in matrix.atoms(sympy.Pow) if p.free_symbols and not p.exp.is_Integer}
    # Application, not Function: `Min` and `Max` are applications but not Functions.
    applied = matrix.atoms(sympy.core.function.Application)
    # Named apart, in a fixed order: sympy sorts the generators of `cancel` by name, and
    # dummies of one name tie, so that their order (and the sign `cancel` gives a
    # fraction) followed the hash seed from one process to the next.
    ordered = sorted(applied | powers, key=sympy.default_sort_key)
    pieces = {p: sympy.Dummy(f"piece{i:03d}") for i, p in enumerate(ordered)}
    coeffs = matrix.xreplace(pieces).charpoly(Z).all_coeffs()
    back = {symbol: piece for piece, symbol in pieces.items()}
    return tuple(sympy.cancel(c).xreplace(back) for c in reversed(coeffs))


def poly_of(coeffs) -> sympy.Poly:
    return sympy.Poly(list(reversed(coeffs)), Z)


def exact_roots(coeffs) -> tuple[Root, ...]:
    """Roots of the polynomial with rational `coeffs` (lowest first), once per multiplicity."""
    _, factors = poly_of(coeffs).sqf_list()
    roots = []
    for factor, mult in factors:
        if factor.degree() < 1:
            continue
        exact = factor.degree() <= EXACT_ROOT_DEGREE
        for value in _factor_roots(factor) if exact else _float_roots(factor):
            re, im = value.as_real_imag()
            re, im = sympy.N(re, DIGITS), sympy.N(im, DIGITS)
            root = Root(sympy.Float(re, DIGITS), sympy.Float(im, DIGITS), mult, factor, exact)
            roots.extend([root] * mult)
    return tuple(sorted(roots, key=lambda r: (-r.modulus, -r.re, -r.im)))


def _factor_roots(factor: sympy.Poly) -> list:
    if factor.degree() == 1:
        a, b = factor.all_coeffs()
        # Exact, and not only rational: a schedule such as sqrt(k+1)/(k+2) puts sqrt(2)/24
        # in a per-layer polynomial (sympy.Rational refuses it).
        return [-b / a]
    return factor.nroots(n=DIGITS, maxsteps=200)


def _float_roots(factor: sympy.Poly) -> list:
    """float64 roots of a square-free factor; 1 stays exactly 1 (it is factored out first)."""
    quotient, ones = factor, []
    if factor.eval(1) == 0:
        quotient, ones = sympy.div(factor, sympy.Poly(Z - 1, Z))[0], [sympy.Integer(1)]
    coeffs = [float(c) for c in quotient.all_coeffs()]
    values = numpy.roots(coeffs) if len(coeffs) > 1 else []
    return ones + [
        sympy.Float(v.real, DIGITS) + sympy.I * sympy.Float(v.imag, DIGITS) for v in values
    ]


def inexact_degrees(roots: tuple[Root, ...]) -> list[int]:
    """Degrees of the factors whose roots are float64 (a limit the certificate notes)."""
    return sorted({r.factor.degree() for r in roots if not r.exact})


def spectral_radius(roots: tuple[Root, ...]) -> sympy.Float:
    return max((r.modulus for r in roots), default=sympy.Float(0))


# ---------------------------------------------------------------- zero-stability
@dataclass(frozen=True)
class Verdict:
    ok: bool
    message: str
    root: Root | None = None  # the root that decided


def _semisimple(matrix: sympy.Matrix, root: Root) -> bool:
    """Every root of the factor has as many eigenvectors as its multiplicity."""
    n = matrix.shape[0]
    f_of_m = sympy.zeros(n, n)
    for power, coef in enumerate(reversed(root.factor.all_coeffs())):
        f_of_m += coef * matrix**power
    nullity = n - f_of_m.rank()
    return nullity == root.multiplicity * root.factor.degree()


def multiplicity_word(m: int) -> str:
    return NAMES.get(m, f"{m}-fold")


def root_condition(roots: tuple[Root, ...], matrix: sympy.Matrix | None = None) -> Verdict:
    """The root condition: |z| <= 1, and roots on the circle simple (semisimple for M)."""
    outside = [r for r in roots if r.outside]
    if outside:
        worst = outside[0]
        where = "" if abs(worst.im) < 1e-12 else f" (|z| = {number(worst.modulus)})"
        return Verdict(
            False, f"root {worst.show()} of rho lies outside the unit circle{where}", worst
        )
    for r in roots:
        if r.on_circle and r.multiplicity > 1:
            if matrix is not None and _semisimple(matrix, r):
                continue
            word = multiplicity_word(r.multiplicity)
            extra = (
                " and M lacks eigenvectors for it (not semisimple)" if matrix is not None else ""
            )
            return Verdict(
                False, f"root {r.show()} of rho is a {word} root on the unit circle{extra}", r
            )
    # Each root on the circle once, with what makes it allowed: simple, or a repeated root
    # for which M has a full set of eigenvectors (semisimple), as the consistency says too.
    on_circle = {}
    for r in roots:
        if r.on_circle and r.show() not in on_circle:
            how = (
                "simple"
                if r.multiplicity == 1
                else f"a {multiplicity_word(r.multiplicity)} root, semisimple"
            )
            on_circle[r.show()] = f"{r.show()} ({how})"
    if on_circle:
        return Verdict(
            True,
            f"every root lies in the closed unit disc; on the circle: {', '.join(sorted(on_circle.values()))}",
            roots[0],
        )
    return Verdict(
        True, "every root lies strictly inside the unit circle", roots[0] if roots else None
    )


def strictly_stable(roots: tuple[Root, ...]) -> bool:
    """Zero-stable with 1 the only root on the unit circle, and simple."""
    return all(
        # |im| against the tolerance: sympy's Float(0.0) == 0 is False (sympy 1.13 on), which
        # made every root 1 count as off the real axis and every limit "not strictly stable".
        not r.on_circle or (r.multiplicity == 1 and abs(r.im) <= r.tolerance and r.re > 0)
        for r in roots
    ) and not any(r.outside for r in roots)


# ---------------------------------------------------------------- consistency and the step
@dataclass(frozen=True)
class Consistency:
    ok: bool
    message: str
    steps: tuple[tuple[str, sympy.Expr], ...] = ()  # h per block

    @property
    def step(self) -> sympy.Expr | None:
        values = {h for _, h in self.steps}
        return values.pop() if len(values) == 1 else None


def _consensus(
    matrix: sympy.Matrix, rec: Recurrence, output: str, primal: set[str]
) -> tuple[sympy.Matrix | None, str]:
    """Eigenvector e of root 1 with the output at 1; None and why when it is not a consensus."""
    basis = (matrix - sympy.eye(matrix.shape[0])).nullspace()
    e = basis[0]
    out = e[rec.index((output, 0))]
    if out == 0:
        return (
            None,
            f"the eigenvector of root 1 leaves the output {output} at 0: a constant input does not pass through",
        )
    e = (e / out).applyfunc(lambda e: sympy.nsimplify(e, rational=True))
    for state in rec.states:
        if state in primal and not _is_one(e[rec.index((state, 0))]):
            value = e[rec.index((state, 0))]
            return (
                None,
                f"the eigenvector of root 1 puts {output} at 1 but {state} at {number(value)}: a constant input is not a fixed point",
            )
    return e, ""


def _is_one(value: sympy.Expr) -> bool:
    """`value == 1`, where a recursive schedule's irrational values are known to 50
    digits (schedules.DIGITS): their quotient A[k]/A[k] comes out 1 - 1e-50."""
    if value == 1:
        return True
    if value.is_number:
        return abs(sympy.N(value - 1, 60)) < sympy.Float(10) ** -40
    return sympy.simplify(value - 1) == 0


def _step_of_call(call: BlockCall, w: sympy.Matrix, e: sympy.Matrix, rec: Recurrence) -> sympy.Expr:
    """(w . B_j) ((C_j + D_j) e): the share of this call in the effective step."""
    wb = sum((w[rec.index((s, 0))] * c for s, c in call.weights), sympy.Integer(0))
    ce = sum((c * e[rec.index(slot)] for slot, c in call.arg_now), sympy.Integer(0))
    ce += sum((c * e[rec.index((s, 0))] for s, c in call.arg_next), sympy.Integer(0))
    return sympy.nsimplify(wb * ce, rational=True)


def _sign(h: sympy.Expr) -> int:
    """-1, 0 or 1: the sign of a step, a constant. sympy cannot always decide it exactly
    (a step in exp(2), exp(4), ... from `exp(-1)` squared: comparing raised TypeError,
    campaign seed 3007145); then it is evaluated to 60 digits, where a value below 1e-50
    is taken for the 0 it is in exact arithmetic."""
    if h.is_zero:
        return 0
    if h.is_positive is not None:
        return 1 if h.is_positive else -1
    value = sympy.N(h, 60)
    if not value.is_real:
        raise Undefined(f"the step h = {number(h)} is not a real number")
    if abs(value) < sympy.Float("1e-50"):
        return 0
    return 1 if value > 0 else -1


def consistency(
    rho, matrix, rec: Recurrence, calls: tuple[BlockCall, ...], output: str, primal: set[str]
) -> Consistency:
    """rho(1) = 0, rho'(1) != 0, a consensus eigenvector, and h > 0 for every block."""
    poly = poly_of(rho)
    at_one = poly.eval(1)
    if at_one != 0:
        return Consistency(
            False, f"rho(1) = {number(at_one)} != 0: with T = 0 a constant is not a fixed point"
        )
    if poly.diff(Z).eval(1) == 0:
        times = 1
        while poly.eval(1) == 0 and poly.degree() > 0:
            poly, times = sympy.div(poly, sympy.Poly(Z - 1, Z))[0], times + 1
        word = multiplicity_word(times - 1)
        return Consistency(
            False,
            f"root 1 of rho is a {word} root (rho'(1) = 0), so the step h = sigma(1)/rho'(1) is undefined",
        )
    if not calls:
        return Consistency(False, "the update calls no block, so it integrates no ODE")
    e, why = _consensus(matrix, rec, output, primal)
    if e is None:
        return Consistency(False, why)
    w = (matrix - sympy.eye(matrix.shape[0])).T.nullspace()[0]
    w = w / (w.T * e)[0]
    steps: dict[str, sympy.Expr] = {}
    for call in calls:
        steps[call.block] = steps.get(call.block, sympy.Integer(0)) + _step_of_call(call, w, e, rec)
    for block, h in steps.items():
        sign = _sign(h)
        if sign <= 0:
            sense = (
                "does not enter the fixed-point dynamics"
                if sign == 0
                else "integrates the ODE backward in time"
            )
            return Consistency(
                False,
                f"the step h = {number(h)} of block {block} is not positive: the rule {sense}",
                tuple(steps.items()),
            )
    shown = (
        ", ".join(f"{number(h)} ({b})" for b, h in steps.items())
        if len(steps) > 1
        else number(next(iter(steps.values())))
    )
    return Consistency(True, f"rho(1) = 0, rho'(1) != 0 and h = {shown} > 0", tuple(steps.items()))


def sigma(
    rec: Recurrence, calls: tuple[BlockCall, ...]
) -> dict[str, tuple[sympy.Expr, ...]] | None:
    """Second characteristic polynomial of a classical one-state rule, per block, lowest first."""
    if not rec.classical:
        return None
    degree = len(rec.slots)
    state = rec.states[0]
    out: dict[str, list] = {}
    for call in calls:
        _, lag = call.single_iterate
        coeffs = out.setdefault(call.block, [sympy.Integer(0)] * (degree + 1))
        coeffs[degree - 1 + lag] += dict(call.weights).get(state, 0)
    return {b: tuple(c) for b, c in out.items()}


# ---------------------------------------------------------------- one layer, all checks
@dataclass(frozen=True)
class LayerCheck:
    rho: tuple[sympy.Expr, ...]
    roots: tuple[Root, ...]
    radius: sympy.Float
    zero_stability: Verdict
    consistency: Consistency


def numeric_calls(calls: tuple[BlockCall, ...], values: dict) -> tuple[BlockCall, ...]:
    def sub(pairs):
        return tuple(
            (key, sympy.nsimplify(sympy.sympify(c).xreplace(values), rational=True))
            for key, c in pairs
        )

    return tuple(
        BlockCall(c.block, sub(c.weights), sub(c.arg_now), sub(c.arg_next), c.reads_input)
        for c in calls
    )


class Undefined(Exception):
    """A coefficient of the recurrence has no value at a layer (a division by zero there):
    that layer cannot be checked, and the certificate says so (verdicts unknown)."""


UNDEFINED = (sympy.zoo, sympy.oo, -sympy.oo, sympy.nan)


def defined(expr) -> bool:
    return not sympy.sympify(expr).has(*UNDEFINED)


def check_layer(rec: Recurrence, values: dict, output: str, primal: set[str]) -> LayerCheck:
    """All exact checks of one layer; `values` maps every symbol (params, k) to a number.
    Undefined when a coefficient has no value there."""
    matrix = sympy.Matrix(rec.matrix.xreplace(values)).applyfunc(
        lambda e: sympy.nsimplify(e, rational=True)
    )
    calls = numeric_calls(rec.calls, values)
    coefficients = [c for call in calls for _, c in call.weights + call.arg_now + call.arg_next]
    if not all(defined(e) for e in [*matrix, *coefficients]):
        raise Undefined("a coefficient of the recurrence is undefined (a division by zero)")
    rho = charpoly(matrix)
    roots = exact_roots(rho)
    zero = root_condition(roots, None if rec.one_state else matrix)
    return LayerCheck(
        rho,
        roots,
        spectral_radius(roots),
        zero,
        consistency(rho, matrix, rec, calls, output, primal),
    )


# ---------------------------------------------------------------- many layers, in floating point
def layer_matrices(
    rec: Recurrence, values: dict, k_symbol: sympy.Symbol, depth: int, start: int = 0
) -> numpy.ndarray:
    """M_k for k = start..start+depth-1 as a float array of shape (depth, n, n).

    k is a float64: numpy evaluates every branch of a Piecewise (`select`), also the one
    of an earlier layer that does not apply at k (c(k-1) = (k-1)/k at k = 0), and a
    division by zero there is inf, not a Python ZeroDivisionError; an entry undefined
    at a layer is nan or inf in that layer's matrix."""
    matrix = rec.matrix.xreplace({s: v for s, v in values.items() if s != k_symbol})
    fn = sympy.lambdify(k_symbol, matrix, "numpy")
    layers = range(start, start + depth)
    with numpy.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return numpy.array(
            [numpy.array(fn(numpy.float64(k)), dtype=float) for k in layers], dtype=float
        )


def radii(mats: numpy.ndarray) -> list[float]:
    if len(mats) == 0:
        return []
    if not numpy.isfinite(mats).all():
        return [
            (
                float(numpy.max(numpy.abs(numpy.linalg.eigvals(m))))
                if numpy.isfinite(m).all()
                else float("inf")
            )
            for m in mats
        ]
    return (
        numpy.max(numpy.abs(numpy.linalg.eigvals(mats)), axis=1).astype(float).tolist()
    )  # batched


def amplification(mats: numpy.ndarray) -> float | None:
    """max_k ||M_k ... M_0|| in the 2-norm; None when it overflows."""
    product = numpy.eye(mats.shape[1])
    products = numpy.empty_like(mats)
    with numpy.errstate(over="ignore", invalid="ignore"):
        for k, m in enumerate(mats):
            product = m @ product
            products[k] = product
    if not numpy.isfinite(products).all():
        return None
    worst = float(numpy.max(numpy.linalg.norm(products, 2, axis=(1, 2))))  # batched
    return worst if numpy.isfinite(worst) else None
