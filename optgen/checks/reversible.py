"""`backward reversible` on a rule whose layers cannot be undone: a located error at the
declaration, with the reason the analysis gives (`analysis.reversible.invert`)."""

from __future__ import annotations

from ..analysis.reversible import NotReversible, invert
from ..errors import Diagnostic, Severity


def reversible_errors(networks) -> list[Diagnostic]:
    """`backward reversible` on a rule whose layers cannot be undone: a located error."""
    found = []
    for net in networks:
        if not net.reversible:
            continue
        try:
            invert(net)
        except NotReversible as why:
            found.append(Diagnostic(Severity.ERROR, net.spans["reversible"], str(why), why.hint))
    return found
