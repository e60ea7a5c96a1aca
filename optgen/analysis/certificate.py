"""The certificate of one network, and the flow of the analysis that fills it.

`analyze_network` runs the passes of this package on one `ir.Network` and returns a frozen
`Certificate`; `Certificate.as_dict()` is the object of `optgen check --json`
(language.md section 7). Every text shown of it is made by `optgen.present`.

This file owns the `Certificate` and its views, the limits of the analysis, the order of
its passes (a rule outside the theory, a stack past the limit, a linear multistep rule, a
one-step Runge-Kutta method) and the reading of `backward reversible`. The passes live
beside it: `draft` (what they share), `convergence` (zero-stability, consistency, the
conditions in the fixed params and the step h) and `verdict` (the universality verdict).
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import ir, present
from ..errors import Diagnostic, Severity
from ..present import number
from ..source import Span
from . import reversible, runge_kutta, stability
from .convergence import (
    fill_checks,
    fill_conditions,
    fill_learnable,
    fill_recurrence,
    fill_runge_kutta,
    fill_runge_kutta_conditions,
    record_runge_kutta_layers,
    runge_kutta_layers,
)
from .draft import (
    Draft,
    expr_text,
    limit_warning,
    param_values,
    poly_text,
    primal_states,
    record_limit,
)
from .recurrence import OutsideTheory, reduce_rule, spaces_reason
from .verdict import block_reasons, equilibrium_reading, runge_kutta_universality, universality

__all__ = [
    "EXACT_LAYERS",
    "MAX_EXACT_SLOTS",
    "MAX_SYMBOLIC_SLOTS",
    "Certificate",
    "analyze_network",
    "expr_text",
    "param_values",
    "poly_text",
    "primal_states",
]

EXACT_LAYERS = 128  # k-dependent rules: exact checks for this many layers, floats beyond


# ---------------------------------------------------------------- the certificate
@dataclass(frozen=True)
class Certificate:
    name: str
    kind: str  # explicit, implicit or equilibrium
    states: tuple[str, ...]
    blocks: tuple[str, ...]
    depth: int
    span: Span
    universal: bool | None
    universal_reasons: tuple[str, ...]
    start: int = 0  # k of the first layer (a model's stage that continues a recurrence)
    slots: tuple[str, ...] = ()
    matrix: tuple[tuple[str, ...], ...] = ()
    rho: tuple[float, ...] | None = None
    rho_text: str | None = None
    sigma: tuple[tuple[str, tuple[float, ...]], ...] | None = None
    roots: tuple[tuple[float, float], ...] | None = None
    root_multiplicities: tuple[int, ...] = ()
    spectral_radius: float | None = None
    zero_stable: bool | None = None
    zero_stability: str | None = None  # the message naming the deciding root
    consistent: bool | None = None
    consistency: str | None = None
    step: float | None = None
    steps: tuple[tuple[str, float | None], ...] = ()
    per_layer: tuple[float, ...] | None = None
    per_layer_step: tuple[float | None, ...] | None = None
    amplification: float | None = None
    conditions: tuple[str, ...] | None = None
    learnable: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    diagnostics: tuple[Diagnostic, ...] = ()
    failure_list: tuple[tuple[Span, str], ...] = ()
    outside_theory: str | None = None
    runge_kutta: runge_kutta.Summary | None = None  # the tableau of a multistage one-step rule
    reversible: dict | None = None  # `backward reversible`: amplification and note

    @property
    def explicit(self) -> bool:
        return self.kind == ir.NetworkKind.EXPLICIT

    # ------------------------------------------------------------ outputs
    def as_dict(self) -> dict:
        """The JSON object of `optgen check --json`: plain floats, ints, str, bool and None."""
        return {
            "name": self.name,
            "kind": str(self.kind),
            "explicit": self.explicit,
            "states": list(self.states),
            "blocks": list(self.blocks),
            "depth": self.depth,
            # Only a stage that continues the recurrence of the stage before it has one.
            **({"start": self.start} if self.start else {}),
            "slots": list(self.slots),
            "matrix": [list(row) for row in self.matrix] or None,
            "rho": None if self.rho is None else list(self.rho),
            "rho_text": self.rho_text,
            "sigma": None if self.sigma is None else {b: list(c) for b, c in self.sigma},
            "roots": None if self.roots is None else [list(r) for r in self.roots],
            "spectral_radius": self.spectral_radius,
            "zero_stable": self.zero_stable,
            "zero_stability": self.zero_stability,
            "consistent": self.consistent,
            "consistency": self.consistency,
            "step": self.step,
            "steps": {b: h for b, h in self.steps} or None,
            "per_layer": None if self.per_layer is None else list(self.per_layer),
            "per_layer_step": None if self.per_layer_step is None else list(self.per_layer_step),
            "amplification": self.amplification,
            "conditions": None if self.conditions is None else list(self.conditions),
            "learnable": list(self.learnable),
            "runge_kutta": None if self.runge_kutta is None else self.runge_kutta.as_dict(),
            "universal": {"guaranteed": self.universal, "reasons": list(self.universal_reasons)},
            "notes": list(self.notes),
            "diagnostics": [_diagnostic_dict(d) for d in self.diagnostics],
            # Only a network declaring `backward reversible` has one.
            **({"reversible": self.reversible} if self.reversible is not None else {}),
        }

    def failures(self) -> list[tuple[Span, str]]:
        """For `--strict`: fixed-coefficient rules that fail zero-stability or consistency."""
        return list(self.failure_list)

    def summary(self) -> str:
        """One line: kind, rho, the checks, h and the verdict (`optgen.present.summary_line`)."""
        return present.summary_line(self)

    def render_text(self) -> str:
        """The block `optgen check` prints (`optgen.present.check_text`)."""
        return present.check_text(self)


def _diagnostic_dict(d: Diagnostic) -> dict:
    return {
        "severity": str(d.severity),  # a plain str: CERTIFICATE is written as a Python literal
        "line": d.span.line,
        "col": d.span.col,
        "message": d.message,
        "hint": d.hint,
    }


# ---------------------------------------------------------------- the analysis
# The exact checks of a layer (characteristic polynomial, eigenvectors of root 1, the
# semisimplicity of roots on the circle) are sympy matrix computations of O(n^3) to
# O(n^4) rational operations: larger stacks are not analysed (a limit, noted and warned).
# Four states read 64 iterates back (the deepest lag the language allows) stack 260
# slots, checked in about a second.
MAX_EXACT_SLOTS = 260
# The symbolic characteristic polynomial (fixed params as symbols) of larger stacks is
# not formed: its coefficients grow with every slot that holds a param.
MAX_SYMBOLIC_SLOTS = 66


def analyze_network(net: ir.Network) -> Certificate:
    base = dict(
        name=net.name,
        kind=net.kind,
        states=net.states,
        blocks=tuple(b.name for b in net.blocks),
        depth=net.depth,
        span=net.span,
        start=net.start,
    )
    try:
        rec = reduce_rule(net)
    except OutsideTheory as why:
        if runge_kutta.is_multistage(net) and not spaces_reason(net):
            return _runge_kutta_certificate(net, base, why)
        reasons = (f"outside the theory: {why}",) + tuple(block_reasons(net))
        return Certificate(
            **base, universal=None, universal_reasons=reasons, outside_theory=str(why)
        )
    if len(rec.slots) > MAX_EXACT_SLOTS:
        why = (
            f"the stacked state has {len(rec.slots)} slots; the exact analysis stops at "
            f"{MAX_EXACT_SLOTS}"
        )
        return Certificate(
            **base,
            universal=None,
            universal_reasons=(why,) + tuple(block_reasons(net)),
            outside_theory=why,
            notes=(f"limit: {why}: no certificate derived",),
            diagnostics=(limit_warning(net, f"{why}: no certificate derived"),),
        )
    draft = Draft()
    if net.reversible:
        _fill_reversible(net, draft)
    draft.notes.extend(rec.notes)
    fill_recurrence(net, rec, draft)
    fill_checks(net, rec, draft, EXACT_LAYERS)
    fill_conditions(net, rec, draft, MAX_SYMBOLIC_SLOTS)
    fill_learnable(net, rec, draft)
    universal = universality(net, rec, draft)
    if net.equilibrium:
        universal = equilibrium_reading(net, draft)
    return Certificate(
        **base,
        universal=universal,
        universal_reasons=tuple(draft.reasons),
        notes=tuple(dict.fromkeys(draft.notes)),
        diagnostics=tuple(draft.diagnostics),
        failure_list=tuple(draft.failures),
        **draft.fields,
    )


def _fill_reversible(net: ir.Network, draft: Draft) -> None:
    """The growth of a rounding error through backward's reconstruction, and a warning
    when float32 cannot carry it."""
    summary = reversible.summary(net)
    ok = summary.pop("float32_ok")
    draft.fields["reversible"] = summary
    for solve in summary.get("solves", ()):
        draft.diagnostics.append(_solve_warning(net, solve))
    if ok:
        return
    amp = summary["amplification"]
    grown = "overflows" if amp is None else f"is {number(amp)}"
    draft.diagnostics.append(
        Diagnostic(
            Severity.WARNING,
            net.spans.get("reversible", net.span),
            f"backward reversible: the rounding error of network {net.name}'s reconstructed"
            f" states grows by a factor that {grown} over {net.depth} layers, more than float32"
            f" carries (eps {number(reversible.FLOAT32_EPS)}): its gradients would be wrong",
            "train it in float64 (module.double()), use fewer layers or a momentum closer to 1,"
            " or drop backward reversible",
        )
    )


def _solve_warning(net: ir.Network, solve: dict) -> Diagnostic:
    """A reconstruction by a solve is right only where the iteration converges."""
    return Diagnostic(
        Severity.WARNING,
        net.spans.get("reversible", net.span),
        f"backward reversible: network {net.name} rebuilds {solve['argument']}, which block"
        f" {solve['block']} reads, by the fixed-point iteration {solve['iteration']}, which"
        f" converges only when {solve['condition']}",
        "keep the step small against the block's Lipschitz constant (the module warns at run"
        " time when the iteration misses its tolerance)",
    )


# ---------------------------------------------------------------- multistage rules: one-step Runge-Kutta methods
def _runge_kutta_certificate(net: ir.Network, base: dict, lmm_why: OutsideTheory) -> Certificate:
    """A rule whose block reads a block output, read as a one-step Runge-Kutta method.

    Null verdicts with both reasons when it has no such reading (a lag or a second state
    mixed with stages); otherwise the tableau, its order, and the convergence of a
    consistent one-step method (zero-stable: rho(z) = z - 1).
    """
    try:
        reading = runge_kutta.read(net)
    except OutsideTheory as why:
        text = f"{lmm_why}; and it is not a one-step Runge-Kutta method: {why}"
        reasons = (f"outside the theory: {text}",) + tuple(block_reasons(net))
        return Certificate(**base, universal=None, universal_reasons=reasons, outside_theory=text)
    draft = Draft()
    values = param_values(net)
    try:
        layers = runge_kutta_layers(net, reading, values, EXACT_LAYERS)
    except stability.Undefined as why:
        text = f"{why}: one-step Runge-Kutta method, zero-stability and consistency unknown"
        record_limit(net, draft, text)
        return Certificate(
            **base,
            universal=None,
            universal_reasons=(f"convergence unknown: {text}",) + tuple(block_reasons(net)),
            notes=tuple(draft.notes),
            diagnostics=tuple(draft.diagnostics),
        )
    first = layers[0]
    fill_runge_kutta(net, reading, first, draft)
    if len(layers) > 1:
        record_runge_kutta_layers(layers, net.start, draft)
    fill_runge_kutta_conditions(net, reading, draft)
    learnable = [p.name for p in net.params if p.learnable and p.symbol in reading.symbols()]
    if learnable:
        draft.notes.append(
            f"learnable {', '.join(learnable)}: checked at the initial values; the theorem's "
            "condition is waived for learnable steps"
        )
    universal = runge_kutta_universality(net, reading, layers, draft)
    return Certificate(
        **base,
        universal=universal,
        universal_reasons=tuple(draft.reasons),
        notes=tuple(dict.fromkeys(draft.notes)),
        diagnostics=tuple(draft.diagnostics),
        failure_list=tuple(draft.failures),
        **draft.fields,
    )
