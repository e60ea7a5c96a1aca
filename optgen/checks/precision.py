"""Solve tolerances a float32 module cannot reach: a warning at the option that sets one."""

from __future__ import annotations

from .. import ir
from ..errors import Diagnostic, Severity
from ..kinds.blocks import FLOAT32_TOLERANCE_FLOOR, tolerances_below_float32


def precision_warnings(networks) -> list[Diagnostic]:
    """A solve tolerance float32 cannot reach: the module's own default dtype misses it."""
    found = []
    for net in networks:
        if net.kind is ir.NetworkKind.EXPLICIT:
            continue
        for role, tol, span in tolerances_below_float32(net):
            found.append(
                Diagnostic(
                    Severity.WARNING,
                    span,
                    f"{role} tol={tol:g} of network {net.name} is below what float32 resolves"
                    f" (about {FLOAT32_TOLERANCE_FLOOR:g}): a float32 module misses it",
                    "run the module in float64 (module.double()), or raise tol;"
                    " the generated tests solve in float64",
                )
            )
    return found
