"""Every coefficient the module computes fits a float32, at every layer.

The resolver keeps each number and product of numbers a normal float64, but the module
runs in float32 by default (`nn.Module` parameters and the generated tests' inputs): a
coefficient of 1e307 is refused by `torch.add(..., alpha=1e307)` on a float32 tensor
("value cannot be converted to type float without overflow"), a learnable param that
starts at 1e300 is inf as an `nn.Parameter`, and `t*t` with t = 1e20 is 1e40, past
float32, though no number the user wrote is. So each coefficient is evaluated as the
module evaluates it (fixed params at their values, learnable ones at their start, `k`
over the layers the network runs) and refused with a located error when its magnitude is
past float32's largest number or, not zero, below its smallest normal one.

A coefficient inside the range can still overflow the forward (t = 1e30 times a block's
output, layer after layer): the language has no bound on the values a block returns, so
that is the generated finiteness test's to report, not the compiler's.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import sympy

from .. import ir, schedules
from ..errors import Diagnostic, Severity
from ..source import Span

FLOAT32_MAX = 3.4028234663852886e38
FLOAT32_TINY = 1.1754943508222875e-38  # the smallest normal float32
# Layers evaluated at each end of a deep network (and indices i at each end of a sum over
# history): a coefficient's extremes over k come from its ends for the schedules a rule
# writes (powers, ratios of polynomials), and 100,000 layers stay cheap.
ENDS = 512


def _layers(net: ir.Network) -> list[int]:
    layers = range(net.start, net.start + max(net.depth, 1))
    if len(layers) <= 2 * ENDS:
        return list(layers)
    return list(layers[:ENDS]) + list(layers[-ENDS:])


def _indices(lo: int, k: int) -> list[int]:
    indices = range(lo, k + 1)
    if len(indices) <= 2 * ENDS:
        return list(indices)
    return list(indices[:ENDS]) + list(indices[-ENDS:])


def _coefficients(form: ir.LinearForm, var: sympy.Symbol | None = None, lo: int = 0):
    """(coefficient, summation variable, its lower end) of every term of `form`, nested
    ones (block and map arguments, map scalars, sum bodies) included."""
    for atom, coef in form.terms:
        yield coef, var, lo
        if isinstance(atom, ir.HistorySum):
            yield from _coefficients(atom.body, atom.var, atom.lo)
        elif isinstance(atom, (ir.BlockOut, ir.MapOut)):
            yield from _coefficients(atom.arg, var, lo)
            for scalar in getattr(atom, "scalars", ()):
                yield sympy.sympify(scalar), var, lo
        elif isinstance(atom, ir.DataScaled):
            # Its factor depends on the data: no fixed range to check; its forms have.
            for inner in ir.inner_forms(atom):
                yield from _coefficients(inner, var, lo)


def _values(expr: sympy.Expr, var, lo: int, layers: list[int]) -> Iterator[tuple[float, str]]:
    """(value, where) of `expr` at each layer (and summation index) it depends on."""
    symbols = expr.free_symbols
    if not symbols:
        yield _exact_float(expr), ""
        return
    args = [ir.K] + ([var] if var is not None else [])
    fn = sympy.lambdify(args, expr, "math")
    for k in layers if ir.K in symbols or var in symbols else layers[:1]:
        for i in _indices(lo, k) if var is not None and var in symbols else [None]:
            try:
                value = float(fn(k, i) if var is not None else fn(k))
            except (ZeroDivisionError, ValueError, TypeError):
                continue  # undefined at this layer: the resolver's to report
            except OverflowError:
                value = math.inf
            where = f" at layer k={k}" if ir.K in symbols else ""
            if i is not None:
                where += f", i={i}"
            yield value, where


def _exact_float(number: sympy.Expr) -> float:
    try:
        return float(number)
    except (OverflowError, TypeError):  # pragma: no cover - the resolver bounds numbers
        return math.inf


def _outside(value: float) -> bool:
    magnitude = abs(value)
    return not math.isfinite(value) or magnitude > FLOAT32_MAX or 0 < magnitude < FLOAT32_TINY


def _shown(expr: sympy.Expr) -> str:
    names = {s: sympy.Symbol(ir.symbol_param(s) or s.name) for s in expr.free_symbols}
    return schedules.user_str(expr.xreplace(names), order="rev-lex")


def _error(span: Span, what: str, value: float, where: str, verb: str = "is") -> Diagnostic:
    size = "overflows" if not math.isfinite(value) or abs(value) > 1 else "underflows"
    shown = "inf" if not math.isfinite(value) else f"{value:.3g}"
    return Diagnostic(
        Severity.ERROR,
        span,
        f"{what} {verb} {shown}{where}: it {size} a float32, the module's default dtype",
        f"keep every coefficient between {FLOAT32_TINY:.2g} and {FLOAT32_MAX:.3g} in magnitude "
        "(or exactly 0) at every layer",
    )


def _starts(net: ir.Network) -> dict[sympy.Symbol, sympy.Expr]:
    """Every param's value as the module starts: fixed ones, learnable ones' start."""
    values = {p.symbol: sympy.sympify(p.value) for p in net.params}
    for _ in net.params:  # a fixed param may be given by others
        if not any(v.free_symbols & values.keys() for v in values.values()):
            break
        values = {s: v.xreplace(values) for s, v in values.items()}
    return values


def network_range_errors(net: ir.Network) -> list[Diagnostic]:
    """The first coefficient of each statement, init and learnable start past float32."""
    found = []
    layers = _layers(net)
    starts = _starts(net)
    for p in net.params:
        if p.learnable:
            for value, where in _values(starts[p.symbol], None, 0, layers):
                if _outside(value):
                    found.append(
                        _error(p.span, f"learnable param {p.name}", value, where, "starts at")
                    )
                    break
    forms = [(st.span, st.form) for st in net.statements]
    forms += [(init.span, init.form) for init in net.init]
    for span, form in forms:
        error = _first_outside(form, starts, layers, span)
        if error is not None:
            found.append(error)
    return found


def _first_outside(form, starts, layers, span) -> Diagnostic | None:
    for coef, var, lo in _coefficients(form):
        value_expr = sympy.sympify(coef).xreplace(starts)
        for value, where in _values(value_expr, var, lo, layers):
            if _outside(value):
                what = f"the coefficient {_shown(sympy.sympify(coef))}"
                return _error(span, what, value, where)
    return None


def range_errors(networks) -> list[Diagnostic]:
    """Located errors for the coefficients of `networks` past float32 (one per statement)."""
    found, seen = [], set()
    for net in networks:
        for d in network_range_errors(net):
            if (d.span, d.message) not in seen:
                seen.add((d.span, d.message))
                found.append(d)
    return found
