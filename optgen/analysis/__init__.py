"""Convergence and universality analysis of an update rule (analysis.md).

`analyze(net)` reduces the rule to its stacked recurrence, checks zero-stability and
consistency, derives the stability conditions in the params and gives the universality
verdict, as a frozen `Certificate`. Pure: no torch, jinja2 or black here.
"""

from __future__ import annotations

import functools

from .. import ir
from .certificate import Certificate, analyze_network, poly_text
from .recurrence import OutsideTheory, Recurrence, reduce_rule


@functools.cache
def analyze(net: ir.Network) -> Certificate:
    """The certificate of one network (cached: IR nodes are frozen and hashable)."""
    return analyze_network(net)


__all__ = ["Certificate", "OutsideTheory", "Recurrence", "analyze", "poly_text", "reduce_rule"]
