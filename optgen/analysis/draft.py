"""What the passes of a certificate share: the `Draft` they fill, their inputs read off
the network, the notes and warnings of a limit hit, and the printing of coefficients.

`certificate` freezes a `Draft` into a `Certificate`; `convergence` and `verdict` fill it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy

from .. import ir, present, schedules
from ..errors import Diagnostic, Severity
from ..present import number
from ..source import Span
from .recurrence import Recurrence, user_names


# ---------------------------------------------------------------- printing polynomials and matrices
def expr_text(expr) -> str:
    """A coefficient in the user's names: 0.9, beta + 1, k/(k + 3)."""
    expr = sympy.sympify(expr)
    if expr.is_number:
        return number(expr)
    return schedules.user_str(user_names(expr)).replace("**", "^")


def poly_text(coeffs, var: str = "z") -> str:
    """`z^2 - 1.9z + 0.9` from coefficients lowest degree first, in the user's names."""
    return present.poly_text(coeffs, var, show=expr_text)


def slot_text(slot: tuple[str, int]) -> str:
    return ir.StateAt(*slot).show()


def matrix_text(matrix: sympy.Matrix) -> tuple[tuple[str, ...], ...]:
    return tuple(
        tuple(expr_text(matrix[i, j]) for j in range(matrix.shape[1]))
        for i in range(matrix.shape[0])
    )


# ---------------------------------------------------------------- inputs of the checks
def param_values(net: ir.Network, keep_fixed_symbolic: bool = False) -> dict:
    """Param symbol -> its (initial) value; fixed params stay symbols with `keep_fixed_symbolic`."""
    return {p.symbol: p.value for p in net.params if p.learnable or not keep_fixed_symbolic}


def primal_states(net: ir.Network) -> set[str]:
    """States that start at the input (a nonzero multiple of it, with input = 1)."""
    start: dict[str, sympy.Expr] = {}
    values = param_values(net)
    for init in net.init:
        total = sympy.Integer(0)
        for atom, coef in init.form.terms:
            base = (
                sympy.Integer(1)
                if isinstance(atom, ir.InputValue)
                else start.get(getattr(atom, "name", ""), sympy.Integer(0))
            )
            total += sympy.sympify(coef).xreplace(values) * base
        start[init.state] = total
    return {s for s, v in start.items() if v != 0}


def symbols_of(rec: Recurrence) -> set:
    found = set(rec.matrix.free_symbols)
    for call in rec.calls:
        for _, c in call.weights + call.arg_now + call.arg_next:
            found |= sympy.sympify(c).free_symbols
    return found


def statement_span(net: ir.Network) -> Span:
    first = next((s for s in net.statements if s.is_state), None)
    return first.span if first is not None else net.span


def deciding_param_span(net: ir.Network, symbols) -> Span | None:
    """The declaration of the first fixed param (in declaration order) among `symbols`.

    A failed check is reported there, since changing that value is the fix; None when no
    fixed param enters the deciding coefficients (`x+ = 2*x - x-`).
    """
    first = next((p for p in net.params if not p.learnable and p.symbol in symbols), None)
    return first.span if first is not None else None


# ---------------------------------------------------------------- the draft of a certificate
@dataclass
class Draft:
    """Fields collected while the checks run; frozen into a Certificate at the end."""

    fields: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    reasons: list = field(default_factory=list)
    diagnostics: list = field(default_factory=list)
    failures: list = field(default_factory=list)


def limit_warning(net: ir.Network, message: str) -> Diagnostic:
    """A bound of the analysis was hit: said at the update, never an error."""
    return Diagnostic(
        Severity.WARNING,
        statement_span(net),
        f"network {net.name}: {message}",
        "the certificate's notes say what was not derived",
    )


def record_limit(net: ir.Network, draft: Draft, message: str) -> None:
    draft.notes.append(f"limit: {message}")
    draft.diagnostics.append(limit_warning(net, message))
