"""The certificate of one network: the recurrence, its checks, and the universality verdict.

`analyze_network` runs the passes of this package on one `ir.Network` and returns a frozen
`Certificate`; `Certificate.as_dict()` is the object of `optgen check --json`
(language.md section 7). Every text shown of it is made by `optgen.present`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy

from .. import ir, present, schedules
from ..errors import Diagnostic, Severity
from ..kinds.blocks import BLOCK_KINDS, two_layer_fact
from ..present import number
from ..source import Span
from . import reversible, runge_kutta, stability, symbolic
from .recurrence import OutsideTheory, Recurrence, iverson, reduce_rule, user_names
from .stability import json_float

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
        return self.kind == "explicit"

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


# ---------------------------------------------------------------- printing polynomials and matrices
def expr_text(expr) -> str:
    """A coefficient in the user's names: 0.9, beta + 1, k/(k + 3)."""
    expr = sympy.sympify(expr)
    if expr.is_number:
        return number(expr)
    return sympy.sstr(user_names(expr)).replace("**", "^")


def poly_text(coeffs, var: str = "z") -> str:
    """`z^2 - 1.9z + 0.9` from coefficients lowest degree first, in the user's names."""
    return present.poly_text(coeffs, var, show=expr_text)


def _slot_text(slot: tuple[str, int]) -> str:
    return ir.StateAt(*slot).show()


def _matrix_text(matrix: sympy.Matrix) -> tuple[tuple[str, ...], ...]:
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


def _symbols_of(rec: Recurrence) -> set:
    found = set(rec.matrix.free_symbols)
    for call in rec.calls:
        for _, c in call.weights + call.arg_now + call.arg_next:
            found |= sympy.sympify(c).free_symbols
    return found


def _statement_span(net: ir.Network) -> Span:
    first = next((s for s in net.statements if s.is_state), None)
    return first.span if first is not None else net.span


def _deciding_param_span(net: ir.Network, symbols) -> Span | None:
    """The declaration of the first fixed param (in declaration order) among `symbols`.

    A failed check is reported there, since changing that value is the fix; None when no
    fixed param enters the deciding coefficients (`x+ = 2*x - x-`).
    """
    first = next((p for p in net.params if not p.learnable and p.symbol in symbols), None)
    return first.span if first is not None else None


# ---------------------------------------------------------------- the analysis
@dataclass
class _Draft:
    """Fields collected while the checks run; frozen into a Certificate at the end."""

    fields: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    reasons: list = field(default_factory=list)
    diagnostics: list = field(default_factory=list)
    failures: list = field(default_factory=list)


# The exact checks of a layer (characteristic polynomial, eigenvectors of root 1, the
# semisimplicity of roots on the circle) are sympy matrix computations of O(n^3) to
# O(n^4) rational operations: larger stacks are not analysed (a limit, noted and warned).
# Four states read 64 iterates back (the deepest lag the language allows) stack 260
# slots, checked in about a second.
MAX_EXACT_SLOTS = 260
# The symbolic characteristic polynomial (fixed params as symbols) of larger stacks is
# not formed: its coefficients grow with every slot that holds a param.
MAX_SYMBOLIC_SLOTS = 66


def _limit_warning(net: ir.Network, message: str) -> Diagnostic:
    """A bound of the analysis was hit: said at the update, never an error."""
    return Diagnostic(
        Severity.WARNING,
        _statement_span(net),
        f"network {net.name}: {message}",
        "the certificate's notes say what was not derived",
    )


def _limit(net: ir.Network, draft: _Draft, message: str) -> None:
    draft.notes.append(f"limit: {message}")
    draft.diagnostics.append(_limit_warning(net, message))


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
        if runge_kutta.is_multistage(net):
            return _runge_kutta_certificate(net, base, why)
        reasons = (f"outside the theory: {why}",) + tuple(_block_reasons(net))
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
            universal_reasons=(why,) + tuple(_block_reasons(net)),
            outside_theory=why,
            notes=(f"limit: {why}: no certificate derived",),
            diagnostics=(_limit_warning(net, f"{why}: no certificate derived"),),
        )
    draft = _Draft()
    if net.reversible:
        _fill_reversible(net, draft)
    draft.notes.extend(rec.notes)
    _fill_recurrence(net, rec, draft)
    _fill_checks(net, rec, draft)
    _fill_conditions(net, rec, draft)
    _fill_learnable(net, rec, draft)
    universal = _universality(net, rec, draft)
    if net.equilibrium:
        universal = _equilibrium_reading(net, draft)
    return Certificate(
        **base,
        universal=universal,
        universal_reasons=tuple(draft.reasons),
        notes=tuple(dict.fromkeys(draft.notes)),
        diagnostics=tuple(draft.diagnostics),
        failure_list=tuple(draft.failures),
        **draft.fields,
    )


def _fill_reversible(net: ir.Network, draft: _Draft) -> None:
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


def _fill_recurrence(net: ir.Network, rec: Recurrence, draft: _Draft) -> None:
    values = {s: v for s, v in param_values(net).items()}
    matrix = sympy.Matrix(rec.matrix.xreplace(values)).applyfunc(sympy.cancel).applyfunc(iverson)
    draft.fields["slots"] = tuple(_slot_text(s) for s in rec.slots)
    draft.fields["matrix"] = _matrix_text(matrix)
    draft.fields["rho_text"] = poly_text(stability.charpoly(matrix))
    draft.fields["learnable"] = tuple(p.name for p in net.params if p.learnable)


def _depends_on_k(net: ir.Network, rec: Recurrence) -> bool:
    values = param_values(net)
    return any(
        ir.K in sympy.sympify(s).xreplace(values).free_symbols
        for s in [*rec.matrix, *_call_coefficients(rec)]
    )


def _call_coefficients(rec: Recurrence) -> list:
    return [c for call in rec.calls for _, c in call.weights + call.arg_now + call.arg_next]


def _fill_checks(net: ir.Network, rec: Recurrence, draft: _Draft) -> None:
    values = param_values(net)
    primal = primal_states(net)
    if not _depends_on_k(net, rec):
        layer = stability.check_layer(rec, values, net.output, primal)
        _record_layer(rec, layer, draft, values)
        _note_float_roots(net, [layer], draft)
        return
    depth, start = net.depth, net.start
    exact = [
        stability.check_layer(rec, _at_layer(values, k), net.output, primal)
        for k in range(start, start + min(depth, EXACT_LAYERS))
    ]
    _record_layer(rec, exact[0], draft, _at_layer(values, start))
    _note_float_roots(net, exact, draft)
    mats = stability.layer_matrices(rec, values, ir.K, depth, start)
    float_radii = stability.radii(mats[len(exact) :]) if depth > len(exact) else []
    draft.fields["per_layer"] = tuple(json_float(layer.radius) for layer in exact) + tuple(
        json_float(r) for r in float_radii
    )
    draft.fields["per_layer_step"] = tuple(_json_or_none(layer.consistency.step) for layer in exact)
    amp = stability.amplification(mats)
    draft.fields["amplification"] = None if amp is None else json_float(amp)
    _record_k_verdicts(exact, start, draft)
    if depth > len(exact):
        _limit(
            net,
            draft,
            f"layers k >= {start + len(exact)} are checked in floating point (spectral radius "
            f"only): the exact checks cover the first {EXACT_LAYERS} layers",
        )
        outside = [i for i, r in enumerate(float_radii) if r > 1 + 1e-9]
        if outside and draft.fields["zero_stable"]:
            first = start + len(exact) + outside[0]
            _set_zero_stability(
                draft,
                False,
                f"at layer k={first}: the spectral radius {number(float_radii[outside[0]])} exceeds 1",
            )
    _note_limit(net, rec, draft)


def _note_float_roots(net: ir.Network, layers: list[stability.LayerCheck], draft: _Draft) -> None:
    degrees = sorted({d for layer in layers for d in stability.inexact_degrees(layer.roots)})
    if degrees:
        _limit(
            net,
            draft,
            f"rho has a square-free factor of degree {', '.join(map(str, degrees))}, above "
            f"{stability.EXACT_ROOT_DEGREE}: its roots are float64 eigenvalues, and |z| within "
            f"{number(stability.FLOAT_TOL)} of 1 counts as on the unit circle",
        )


def _at_layer(values: dict, k: int) -> dict:
    """Param values at layer k, and k itself (the values may use k)."""
    return {**{s: sympy.sympify(v).xreplace({ir.K: k}) for s, v in values.items()}, ir.K: k}


def _json_or_none(x) -> float | None:
    return None if x is None else json_float(x)


def _record_layer(
    rec: Recurrence, layer: stability.LayerCheck, draft: _Draft, values: dict
) -> None:
    f = draft.fields
    f["rho"] = tuple(json_float(c) for c in layer.rho)
    f["roots"] = tuple((json_float(r.re), json_float(r.im)) for r in layer.roots)
    f["root_multiplicities"] = tuple(r.multiplicity for r in layer.roots)
    f["spectral_radius"] = json_float(layer.radius)
    f["zero_stable"] = layer.zero_stability.ok
    f["zero_stability"] = layer.zero_stability.message
    f["consistent"] = layer.consistency.ok
    f["consistency"] = layer.consistency.message
    f["step"] = _json_or_none(layer.consistency.step)
    f["steps"] = tuple((b, json_float(h)) for b, h in layer.consistency.steps)
    sig = stability.sigma(rec, stability.numeric_calls(rec.calls, values))
    if sig is not None:
        f["sigma"] = tuple((b, tuple(json_float(c) for c in coeffs)) for b, coeffs in sig.items())
    if (
        layer.consistency.steps
        and len(layer.consistency.steps) > 1
        and layer.consistency.step is None
    ):
        draft.notes.append("the blocks have different steps h; `step` is null, `steps` lists them")


def _set_zero_stability(draft: _Draft, ok: bool, message: str) -> None:
    draft.fields["zero_stable"] = ok
    draft.fields["zero_stability"] = message


def _record_k_verdicts(layers: list[stability.LayerCheck], start: int, draft: _Draft) -> None:
    """The verdicts of the layers k = start, start+1, ...: the first failing layer decides."""
    which = f"k < {start + len(layers)}" if start == 0 else f"{start} <= k < {start + len(layers)}"
    numbered = list(enumerate(layers, start=start))
    bad_zero = next(((k, c) for k, c in numbered if not c.zero_stability.ok), None)
    if bad_zero is not None:
        _set_zero_stability(
            draft, False, f"at layer k={bad_zero[0]}: {bad_zero[1].zero_stability.message}"
        )
    else:
        _set_zero_stability(draft, True, f"every layer {which} satisfies the root condition")
    bad_cons = next(((k, c) for k, c in numbered if not c.consistency.ok), None)
    if bad_cons is not None:
        draft.fields["consistent"] = False
        draft.fields["consistency"] = f"at layer k={bad_cons[0]}: {bad_cons[1].consistency.message}"
    else:
        draft.fields["consistent"] = True
        draft.fields["consistency"] = (
            f"every layer {which} is consistent (h > 0); at k={start}: {layers[0].consistency.message}"
        )


def _note_limit(net: ir.Network, rec: Recurrence, draft: _Draft) -> None:
    """Say when the limit k -> infinity loses strict stability (Nesterov's beta_k -> 1 does)."""
    values = param_values(net)
    if schedules.schedule_functions(rec.matrix.xreplace(values)):
        draft.notes.append(
            "a recursive schedule has no closed form: the limit k -> infinity is not derived, "
            "only the finite depth is covered (see amplification)"
        )
        return
    # A sum from a later layer (or a sliding window) is a step function of k,
    # Piecewise((c, k >= lo), (0, True)): c from layer lo on, so c in the limit.
    matrix = rec.matrix.xreplace(values).replace(
        lambda e: isinstance(e, sympy.Piecewise), lambda e: e.args[0][0]
    )
    try:
        limit = sympy.Matrix(matrix).applyfunc(lambda e: sympy.limit(e, ir.K, sympy.oo))
    except (NotImplementedError, ValueError, TypeError):  # pragma: no cover - sympy gives up
        return
    if any(not e.is_finite for e in limit):
        draft.notes.append("some coefficient of M_k grows without bound as k -> infinity")
        return
    rho = stability.charpoly(limit.applyfunc(lambda e: sympy.nsimplify(e, rational=True)))
    roots = stability.exact_roots(rho)
    if not stability.strictly_stable(roots):
        verdict = stability.root_condition(roots, None if rec.one_state else limit)
        why = verdict.message if not verdict.ok else "a root other than 1 reaches the unit circle"
        draft.notes.append(
            f"as k -> infinity, rho -> {poly_text(rho)}: {why}; the limit loses strict stability, "
            "so only the finite depth is covered (see amplification)"
        )


# ---------------------------------------------------------------- symbolic conditions and learnable params
def _fill_conditions(net: ir.Network, rec: Recurrence, draft: _Draft) -> None:
    matrix = rec.matrix.xreplace(param_values(net, keep_fixed_symbolic=True))
    symbolic_slots = len(rec.slots) > MAX_SYMBOLIC_SLOTS and matrix.free_symbols - {ir.K}
    if symbolic_slots:
        draft.fields["conditions"] = None
        _limit(
            net,
            draft,
            f"the stacked state has {len(rec.slots)} slots and rho depends on fixed params; "
            f"symbolic conditions are derived up to {MAX_SYMBOLIC_SLOTS} slots",
        )
        return
    rho = stability.charpoly(sympy.Matrix(matrix))
    conditions, why = symbolic.stability_conditions(rho)
    _record_conditions(net, conditions, why, draft)


def _record_conditions(net: ir.Network, conditions, why, draft: _Draft) -> None:
    draft.fields["conditions"] = None if conditions is None else tuple(conditions)
    if isinstance(why, symbolic.Limit):
        _limit(net, draft, why)
    elif why:
        draft.notes.append(why)


def _fill_learnable(net: ir.Network, rec: Recurrence, draft: _Draft) -> None:
    learnable = [p for p in net.params if p.learnable and p.symbol in _symbols_of(rec)]
    if not learnable:
        return
    names = ", ".join(p.name for p in learnable)
    draft.notes.append(
        f"learnable {names}: checked at the initial values; the theorem's condition is waived for learnable steps"
    )
    per_channel = [p.name for p in learnable if p.per_channel]
    if per_channel:
        # Every figure is per feature: channel c follows the same rule with its own value.
        draft.notes.append(
            f"per-channel {', '.join(per_channel)}: the rule is read channel by channel; the "
            "conditions must hold for every entry, and every channel starts at the value checked"
        )
    in_rho = [p for p in learnable if p.symbol in rec.matrix.free_symbols]
    if not in_rho:
        if draft.fields.get("zero_stable"):
            draft.notes.append(
                f"zero-stable for every trained value of {names} (rho does not depend on {'it' if len(learnable) == 1 else 'them'})"
            )
        return
    for p in in_rho:
        note = _trained_range_note(net, rec, p)
        if isinstance(note, symbolic.Limit):
            _limit(net, draft, note)
        else:
            draft.notes.append(note)


def _trained_range_note(net: ir.Network, rec: Recurrence, p: ir.Param) -> str:
    others = {s: v for s, v in param_values(net).items() if s != p.symbol}
    matrix = rec.matrix.xreplace(others)
    declared = "(unconstrained)" if p.bound is None else p.bound.show(p.name)
    if matrix.free_symbols - {p.symbol}:
        return f"learnable {p.name}: its range {declared} is not checked (rho depends on k or other learnable params)"
    region = symbolic.region_of(stability.charpoly(sympy.Matrix(matrix)), p.symbol)
    if region is None:
        return symbolic.Limit(
            f"learnable {p.name}: its range {declared} is not checked (no symbolic region "
            "within the bounds of the Schur-Cohn reduction)"
        )
    allowed = symbolic.show_set(region, p.name)
    if p.bound is None:
        return f"learnable {p.name} is unconstrained: training may leave the stability region {allowed}"
    if symbolic.bound_set(p.bound).is_subset(region):
        return f"zero-stable for every trained value: {p.bound.show(p.name)} lies inside {allowed}"
    return f"learnable {p.name}: its range {p.bound.show(p.name)} leaves the stability region {allowed}"


# ---------------------------------------------------------------- the verdict
def _block_facts(net: ir.Network) -> list[tuple[bool | None, str]]:
    return [two_layer_fact(BLOCK_KINDS[b.kind], dict(b.args)) for b in net.blocks]


def _block_reasons(net: ir.Network) -> list[str]:
    return [f"block {b.name}: {why}" for b, (_, why) in zip(net.blocks, _block_facts(net))]


def _universality(net: ir.Network, rec: Recurrence, draft: _Draft) -> bool | None:
    facts = [fact for fact, _ in _block_facts(net)]
    draft.reasons.extend(_block_reasons(net))
    if not net.blocks:
        facts.append(False)
        draft.reasons.append("the update calls no block")
    convergent = _convergence_reason(net, rec, draft)
    verdicts = facts + [convergent]
    if False in verdicts:
        return False
    if None in verdicts:
        return None
    return True


def _equilibrium_reading(net: ir.Network, draft: _Draft) -> None:
    """An equilibrium network is solved to its fixed point, not iterated layer by layer.

    The linear-multistep checks are still reported for the literal update (with `input`
    as a forcing term), but they are no convergence conditions of the network: no
    warning, no `--strict` failure, and the universality verdict is unknown.
    """
    draft.failures.clear()
    draft.diagnostics[:] = [
        d
        for d in draft.diagnostics
        if "--strict" not in (d.hint or "") and "initial values" not in d.message
    ]
    draft.reasons.append(
        "equilibrium: the network is the fixed point of one shared update, not a stack of its "
        "iterations, so the linear-multistep theorem does not apply"
    )
    draft.notes.append(
        "the multistep figures describe the update iterated as written, with input as a forcing term; "
        "the solver needs the update to be a contraction (see solver_stats and contraction_iterations)"
    )
    return None


def _convergence_reason(net: ir.Network, rec: Recurrence, draft: _Draft) -> bool:
    f = draft.fields
    if f.get("zero_stable") and f.get("consistent"):
        h = f"h = {number(f['step'])}" if f.get("step") is not None else "h > 0"
        draft.reasons.append(f"convergent: zero-stable and consistent ({h})")
        return True
    learnable = {p.symbol: p.name for p in net.params if p.learnable}
    failed = []
    statement = _statement_span(net)
    for ok_key, msg_key, symbols, what in (
        ("zero_stable", "zero_stability", rec.matrix.free_symbols, "not zero-stable"),
        ("consistent", "consistency", _symbols_of(rec), "not consistent"),
    ):
        if f.get(ok_key):
            continue
        waived_by = sorted(learnable[s] for s in symbols if s in learnable)
        message = f"{what}: {f[msg_key]}"
        if waived_by:
            draft.reasons.append(
                f"{message}; waived: the learnable {', '.join(waived_by)} can be trained to convergent values"
            )
            draft.diagnostics.append(
                Diagnostic(
                    Severity.WARNING,
                    statement,
                    f"network {net.name} is {message} at its initial values",
                )
            )
            continue
        # A param in rho decides first (beta in heavy ball makes h negative, not t); the
        # params of sigma decide only a failure of the step h itself.
        about_step = "the step h" in message and "undefined" not in message
        span = (
            _deciding_param_span(net, rec.matrix.free_symbols)
            or (_deciding_param_span(net, symbols) if about_step else None)
            or statement
        )
        failed.append(message)
        draft.reasons.append(message)
        draft.diagnostics.append(
            Diagnostic(
                Severity.WARNING,
                span,
                f"network {net.name} is {message}",
                "--strict makes this an error",
            )
        )
        draft.failures.append((span, f"network {net.name} is {message}"))
    return not failed


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
        reasons = (f"outside the theory: {text}",) + tuple(_block_reasons(net))
        return Certificate(**base, universal=None, universal_reasons=reasons, outside_theory=text)
    draft = _Draft()
    values = param_values(net)
    layers = _runge_kutta_layers(net, reading, values)
    first = layers[0]
    _fill_runge_kutta(net, reading, first, draft)
    if len(layers) > 1:
        _record_runge_kutta_layers(layers, net.start, draft)
    _fill_runge_kutta_conditions(net, reading, draft)
    learnable = [p.name for p in net.params if p.learnable and p.symbol in reading.symbols()]
    if learnable:
        draft.notes.append(
            f"learnable {', '.join(learnable)}: checked at the initial values; the theorem's "
            "condition is waived for learnable steps"
        )
    universal = _runge_kutta_universality(net, reading, layers, draft)
    return Certificate(
        **base,
        universal=universal,
        universal_reasons=tuple(draft.reasons),
        notes=tuple(dict.fromkeys(draft.notes)),
        diagnostics=tuple(draft.diagnostics),
        failure_list=tuple(draft.failures),
        **draft.fields,
    )


def _runge_kutta_layers(
    net: ir.Network, reading: runge_kutta.Reading, values: dict
) -> list[runge_kutta.Tableau]:
    """The tableau of the first layer, or of every exactly checked layer when it uses k."""
    symbols = set()
    for e in (reading.keep, *reading.b_raw, *(x for row in reading.a_raw for x in row)):
        symbols |= sympy.sympify(e).xreplace(values).free_symbols
    start = net.start
    count = min(net.depth, EXACT_LAYERS) if ir.K in symbols else 1
    return [runge_kutta.tableau(reading, _at_layer(values, k)) for k in range(start, start + count)]


def _fill_runge_kutta(
    net: ir.Network, reading: runge_kutta.Reading, tab: runge_kutta.Tableau, draft: _Draft
) -> None:
    f = draft.fields
    rho = (-tab.keep, sympy.Integer(1))
    roots = stability.exact_roots(rho)
    zero = stability.root_condition(roots)
    f["slots"] = (reading.state,)
    f["matrix"] = ((expr_text(tab.keep),),)
    f["rho"] = tuple(json_float(c) for c in rho)
    f["rho_text"] = poly_text(rho)
    f["roots"] = tuple((json_float(r.re), json_float(r.im)) for r in roots)
    f["root_multiplicities"] = tuple(r.multiplicity for r in roots)
    f["spectral_radius"] = json_float(stability.spectral_radius(roots))
    f["zero_stable"] = zero.ok
    f["zero_stability"] = f"one-step method: {zero.message}"
    f["consistent"] = tab.consistent
    f["consistency"] = tab.consistency()
    f["step"] = _json_or_none(tab.step)
    f["steps"] = tuple((b, json_float(h)) for b, h in tab.steps)
    f["learnable"] = tuple(p.name for p in net.params if p.learnable)
    order = tab.order() if tab.consistent else None
    f["runge_kutta"] = runge_kutta.summary(tab, order, json_float)
    draft.notes.append(
        f"a block reads a block output: read as a one-step Runge-Kutta method with "
        f"{len(tab.blocks)} stage(s) ({', '.join(tab.texts)}), not as a linear multistep method"
    )
    if len(tab.steps) > 1 and tab.step is None:
        draft.notes.append("the blocks have different steps h; `step` is null, `steps` lists them")


def _record_runge_kutta_layers(
    layers: list[runge_kutta.Tableau], start: int, draft: _Draft
) -> None:
    """k-dependent coefficients: every layer is checked; the first failing one decides."""
    f = draft.fields
    f["per_layer"] = tuple(json_float(abs(tab.keep)) for tab in layers)
    f["per_layer_step"] = tuple(_json_or_none(tab.step) for tab in layers)
    f["amplification"] = json_float(
        max(abs(sympy.Mul(*(t.keep for t in layers[: i + 1]))) for i in range(len(layers)))
    )
    bad = next(((k, t) for k, t in enumerate(layers, start=start) if not t.consistent), None)
    if bad is not None:
        f["consistent"] = False
        f["consistency"] = f"at layer k={bad[0]}: {bad[1].consistency()}"
    else:
        orders = [t.order() for t in layers]
        summary = f["runge_kutta"]
        f["runge_kutta"] = runge_kutta.Summary(
            summary.stages, summary.blocks, summary.A, summary.b, summary.c, min(orders)
        )
    if len(layers) > 1:
        draft.notes.append(
            f"the coefficients depend on k: layers {start} <= k < {start + len(layers)} are checked; "
            "`runge_kutta` shows the first layer's tableau and the least order"
        )


def _fill_runge_kutta_conditions(
    net: ir.Network, reading: runge_kutta.Reading, draft: _Draft
) -> None:
    keep = sympy.sympify(reading.keep).xreplace(param_values(net, keep_fixed_symbolic=True))
    conditions, why = symbolic.stability_conditions((-keep, sympy.Integer(1)))
    _record_conditions(net, conditions, why, draft)


def _runge_kutta_universality(
    net: ir.Network,
    reading: runge_kutta.Reading,
    layers: list[runge_kutta.Tableau],
    draft: _Draft,
) -> bool | None:
    facts = [fact for fact, _ in _block_facts(net)]
    draft.reasons.extend(_block_reasons(net))
    f = draft.fields
    order = f["runge_kutta"].order
    if f["consistent"] and f["zero_stable"]:
        h = f"h = {number(f['step'])}" if f.get("step") is not None else "h > 0"
        draft.reasons.append(
            f"convergent: one-step Runge-Kutta method, consistent (order {order}), "
            f"zero-stable (rho(z) = z - 1), {h}"
        )
        convergent = True
    else:
        convergent = _runge_kutta_failure(net, reading, draft)
    verdicts = facts + [convergent]
    if False in verdicts:
        return False
    return None if None in verdicts else True


def _runge_kutta_failure(
    net: ir.Network, reading: runge_kutta.Reading, draft: _Draft
) -> bool | None:
    """Waived when a learnable param enters the weights; otherwise no argument applies."""
    f = draft.fields
    message = f"not consistent: {f['consistency']}"
    learnable = sorted(p.name for p in net.params if p.learnable and p.symbol in reading.symbols())
    statement = _statement_span(net)
    if learnable:
        draft.reasons.append(
            f"one-step Runge-Kutta method, {message}; waived: the learnable "
            f"{', '.join(learnable)} can be trained to convergent values"
        )
        draft.diagnostics.append(
            Diagnostic(
                Severity.WARNING,
                statement,
                f"network {net.name} is {message} at its initial values",
            )
        )
        return True
    draft.reasons.append(f"one-step Runge-Kutta method, {message}: no convergence argument applies")
    span = _deciding_param_span(net, reading.symbols()) or statement
    draft.diagnostics.append(
        Diagnostic(
            Severity.WARNING,
            span,
            f"network {net.name} is {message}",
            "--strict makes this an error",
        )
    )
    draft.failures.append((span, f"network {net.name} is {message}"))
    return None
