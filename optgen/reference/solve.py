"""The reference's fixed-point solve: plain iteration z <- f(z), differentiated through.

Implicit statements (language.md 6.2) and equilibrium updates (6.3) are defined by their
fixed point, not by a solver: any method that reaches it gives the same value and, by the
implicit function theorem, the same gradient. The reference takes the plainest one, simple
iteration, run to a tight tolerance in float64 with autograd recording every step. The
derivative of the n-th iterate converges to the derivative of the fixed point at the same
linear rate as the iterates (for a contraction with factor L, both errors shrink like
n * L^n), so the unrolled gradient is the implicit one to about the tolerance.

It converges when f is a contraction; when it is not, the reference raises rather than
return a point that is not a fixed point (choose blocks that make the map contract, e.g.
small weights, as the differential tests do).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

State = dict[str, torch.Tensor]


class NotConverged(RuntimeError):
    """Simple iteration did not reach the tolerance (the map does not contract enough)."""


@dataclass(frozen=True)
class FixedPoint:
    """Simple iteration to `tol`: the largest relative residual ||f(z) - z|| / ||f(z)|| of
    a sample (the norm taken over each sample of every state: dimension 0 indexes samples)
    at most `tol`, within `max_iter` evaluations of f."""

    tol: float = 1e-12
    max_iter: int = 2000

    def solve(self, f: Callable[[State], State], start: State) -> State:
        z = start
        for step in range(self.max_iter):
            fz = f(z)
            try:
                if relative_residual(fz, z) <= self.tol:
                    return fz
            except FloatingPointError:
                # Diverged: no fixed point is reached from here either.
                raise NotConverged(
                    f"simple iteration diverged (NaN or inf after {step + 1} steps):"
                    " the map is not a contraction here"
                ) from None
            z = fz
        raise NotConverged(
            f"simple iteration did not reach the relative residual {self.tol:g} in"
            f" {self.max_iter} steps (last {relative_residual(f(z), z):.3g}):"
            " the map is not a contraction here"
        )


def relative_residual(fz: State, z: State) -> float:
    """max over samples of ||f(z) - z|| / max(||f(z)||, ||z||), all states of a sample
    together. The larger norm, not ||f(z)|| alone: a map that sends a sample to exactly 0
    (a relu or a shrinkage) made the ratio overflow to inf (campaign seed 3005766)."""
    with torch.no_grad():
        diff = sum(_per_sample_square(fz[name] - z[name]) for name in fz)
        size = sum(
            torch.maximum(_per_sample_square(fz[name]), _per_sample_square(z[name])) for name in fz
        )
        ratio = torch.sqrt(diff) / torch.sqrt(size).clamp_min(torch.finfo(size.dtype).tiny)
        if not torch.isfinite(ratio).all():
            raise FloatingPointError("the fixed-point iteration produced NaN or inf")
        return float(ratio.max()) if ratio.numel() else 0.0


def _per_sample_square(t: torch.Tensor) -> torch.Tensor:
    if t.dim() == 0:
        return t.reshape(1) ** 2
    return (t.reshape(t.shape[0], -1) ** 2).sum(dim=1)
