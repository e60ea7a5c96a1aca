"""Certificates as a picture (`optgen check --plot`); the table of `--markdown` is in present.py."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import sympy

from .. import ir


# ---------------------------------------------------------------- plot
def _fixed_params(net: ir.Network) -> list[ir.Param]:
    return [p for p in net.params if not p.learnable and not p.depends_on_k]


def radius_curve(
    net: ir.Network, param: ir.Param, points: int = 41
) -> tuple[list[float], list[float | None], list[bool]]:
    """Spectral radius and zero-stability of the rule as one fixed param sweeps a range."""
    from ..analysis.certificate import analyze_network

    centre = float(param.value)
    lo, hi = sorted((centre - 2 * max(1.0, abs(centre)), centre + 2 * max(1.0, abs(centre))))
    xs = [lo + (hi - lo) * i / (points - 1) for i in range(points)]
    radii, stable = [], []
    for x in xs:
        changed = dataclasses.replace(
            param, value=sympy.nsimplify(round(x, 6), rational=True), bound=None
        )
        variant = dataclasses.replace(
            net, params=tuple(changed if p.name == param.name else p for p in net.params)
        )
        c = analyze_network(ir.at_depth(variant)).as_dict()
        radii.append(c.get("spectral_radius"))
        stable.append(bool(c.get("zero_stable")))
    return xs, radii, stable


def plot_certificate(net: ir.Network, certificate: dict, path: Path) -> None:
    """Roots of rho with the unit circle; for one fixed param, the radius over that param."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conditions = " ".join(certificate.get("conditions") or [])
    params = [p for p in _fixed_params(net) if re.search(rf"\b{re.escape(p.name)}\b", conditions)]
    sweep = params[0] if len(params) == 1 else None
    fig, axes = plt.subplots(
        1, 2 if sweep else 1, figsize=(9 if sweep else 4.5, 4.2), squeeze=False
    )
    ax = axes[0][0]
    angle = [2 * math.pi * i / 200 for i in range(201)]
    ax.plot([math.cos(a) for a in angle], [math.sin(a) for a in angle], "k", lw=0.8)
    for real, imag in certificate.get("roots") or []:
        inside = math.hypot(real, imag) <= 1 + 1e-9
        ax.plot(
            real, imag, "o", color="tab:green" if inside else "tab:red", ms=7, mfc="none", mew=2
        )
    ax.axhline(0, color="0.8", lw=0.5)
    ax.axvline(0, color="0.8", lw=0.5)
    ax.set_aspect("equal")
    ax.set_title(f"{net.name}: roots of rho", fontsize=9)
    if sweep is not None:
        xs, radii, stable = radius_curve(net, sweep)
        ax2 = axes[0][1]
        ax2.plot(xs, [r if r is not None else float("nan") for r in radii], "tab:blue")
        for x0, x1, ok in zip(xs, xs[1:], stable):
            if ok:
                ax2.axvspan(x0, x1, color="tab:green", alpha=0.15, lw=0)
        ax2.axhline(1, color="k", lw=0.6, ls="--")
        ax2.axvline(float(sweep.value), color="tab:red", lw=0.8)
        ax2.set_xlabel(sweep.name)
        ax2.set_ylabel("spectral radius")
        ax2.set_title(f"stable (shaded): {'; '.join(certificate['conditions'])}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
