"""The bridge from the analysis package to the rest of the pipeline.

`optgen.analysis` computes the certificate; this module turns it into the dict of
`check --json`, the diagnostics of `--strict` and the text of `optgen check`.
"""

from __future__ import annotations

from . import ir
from .errors import Diagnostic, Severity
from .source import SourceFile

_UNKNOWN = {
    "rho": None,
    "roots": None,
    "spectral_radius": None,
    "zero_stable": None,
    "consistent": None,
    "step": None,
    "per_layer": None,
    "amplification": None,
    "conditions": [],
}


def _analyze(net: ir.Network):
    try:
        from .analysis import analyze
    except ImportError:  # the analysis package is not there yet
        return None
    return analyze(net)


def certificate_dict(net: ir.Network, source: SourceFile | None = None) -> dict:
    cert = _analyze(net)
    if cert is not None:
        return cert.as_dict()
    return {
        "name": net.name,
        "explicit": net.kind == "explicit",
        "states": list(net.states),
        "blocks": [b.name for b in net.blocks],
        "depth": net.depth,
        **_UNKNOWN,
        "universal": {"guaranteed": None, "reasons": ["analysis not available"]},
        "diagnostics": [],
    }


def strict_diagnostics(net: ir.Network) -> list[Diagnostic]:
    cert = _analyze(net)
    if cert is None:
        return []
    return [Diagnostic(Severity.ERROR, span, message) for span, message in cert.failures()]


def render_text(net: ir.Network, certificate: dict) -> str:
    cert = _analyze(net)
    if cert is not None:
        return cert.render_text()
    return f"{net.name}: {certificate}"
