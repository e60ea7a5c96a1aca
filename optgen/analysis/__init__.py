"""Convergence and universality analysis of an update rule (analysis.md).

`analyze(net)` reduces the rule to its stacked recurrence, checks zero-stability and
consistency, derives the stability conditions in the params and gives the universality
verdict, as a frozen `Certificate`. Pure: no torch, jinja2 or black here.
"""

from __future__ import annotations

import dataclasses
import functools

from .. import ir
from .certificate import Certificate, analyze_network, poly_text
from .recurrence import OutsideTheory, Recurrence, reduce_rule


@functools.cache
def analyze(net: ir.Network) -> Certificate:
    """The certificate of one network (cached: IR nodes are frozen and hashable), at its
    declared depth: where the rule reads `L`, it says which depth that is (a module built
    deeper has other coefficients)."""
    cert = analyze_network(ir.at_depth(net))
    if not ir.reads_depth(net):
        return cert
    note = (
        f"L, the depth, is {net.depth} in this certificate (the declared layers): a module "
        f"built with depth=D has its coefficients at L = D, and its certificate is that of "
        f"the rule with layers D"
    )
    return dataclasses.replace(cert, notes=(*cert.notes, note))


__all__ = ["Certificate", "OutsideTheory", "Recurrence", "analyze", "poly_text", "reduce_rule"]
