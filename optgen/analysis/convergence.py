"""The convergence checks of a certificate: the fields a `Draft` gets from them.

For a linear multistep rule: the recurrence printed (slots, matrix, rho), zero-stability
and consistency layer by layer (exact up to a number of layers, floats beyond), the step h,
the limit k -> infinity, the stability conditions in the fixed params and the ranges of
the learnable ones. For a one-step Runge-Kutta method: its tableau, order and conditions.
The limits they stop at are passed in by `certificate`, which owns them.
"""

from __future__ import annotations

import numpy
import sympy

from .. import ir, schedules
from ..present import number
from . import runge_kutta, stability, symbolic
from .draft import (
    Draft,
    expr_text,
    matrix_text,
    param_values,
    poly_text,
    primal_states,
    record_limit,
    slot_text,
    symbols_of,
)
from .recurrence import Recurrence, iverson
from .stability import json_float


def fill_recurrence(net: ir.Network, rec: Recurrence, draft: Draft) -> None:
    values = {s: v for s, v in param_values(net).items()}
    matrix = sympy.Matrix(rec.matrix.xreplace(values)).applyfunc(sympy.cancel).applyfunc(iverson)
    draft.fields["slots"] = tuple(slot_text(s) for s in rec.slots)
    draft.fields["matrix"] = matrix_text(matrix)
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


def fill_checks(net: ir.Network, rec: Recurrence, draft: Draft, exact_layers: int) -> None:
    """The checks of every layer, or, where a coefficient has no value at a layer (a
    division by zero there), verdicts unknown with that layer as the reason."""
    try:
        _fill_checks(net, rec, draft, exact_layers)
    except stability.Undefined as why:
        message = f"unknown: {why}, so that layer cannot be checked"
        draft.fields.update(
            zero_stable=None, zero_stability=message, consistent=None, consistency=message
        )
        record_limit(net, draft, f"{why}: zero-stability and consistency are not decided")


def _check_at(rec: Recurrence, values: dict, k: int, output: str, primal: set[str]):
    try:
        return stability.check_layer(rec, _at_layer(values, k), output, primal)
    except stability.Undefined as why:
        raise stability.Undefined(f"at layer k={k}: {why}") from None


def _fill_checks(net: ir.Network, rec: Recurrence, draft: Draft, exact_layers: int) -> None:
    values = param_values(net)
    primal = primal_states(net)
    if not _depends_on_k(net, rec):
        layer = stability.check_layer(rec, values, net.output, primal)
        _record_layer(rec, layer, draft, values)
        _note_float_roots(net, [layer], draft)
        return
    depth, start = net.depth, net.start
    exact = [
        _check_at(rec, values, k, net.output, primal)
        for k in range(start, start + min(depth, exact_layers))
    ]
    mats = stability.layer_matrices(rec, values, ir.K, depth, start)
    undefined = [i for i, m in enumerate(mats) if not numpy.isfinite(m).all()]
    if undefined:
        raise stability.Undefined(
            f"at layer k={start + undefined[0]}: a coefficient of the recurrence is undefined"
            " (a division by zero)"
        )
    _record_layer(rec, exact[0], draft, _at_layer(values, start))
    _note_float_roots(net, exact, draft)
    float_radii = stability.radii(mats[len(exact) :]) if depth > len(exact) else []
    draft.fields["per_layer"] = tuple(json_float(layer.radius) for layer in exact) + tuple(
        json_float(r) for r in float_radii
    )
    draft.fields["per_layer_step"] = tuple(_json_or_none(layer.consistency.step) for layer in exact)
    amp = stability.amplification(mats)
    draft.fields["amplification"] = None if amp is None else json_float(amp)
    _record_k_verdicts(exact, start, draft)
    if depth > len(exact):
        record_limit(
            net,
            draft,
            f"layers k >= {start + len(exact)} are checked in floating point (spectral radius "
            f"only): the exact checks cover the first {exact_layers} layers",
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


def _note_float_roots(net: ir.Network, layers: list[stability.LayerCheck], draft: Draft) -> None:
    degrees = sorted({d for layer in layers for d in stability.inexact_degrees(layer.roots)})
    if degrees:
        record_limit(
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


def _record_layer(rec: Recurrence, layer: stability.LayerCheck, draft: Draft, values: dict) -> None:
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


def _set_zero_stability(draft: Draft, ok: bool, message: str) -> None:
    draft.fields["zero_stable"] = ok
    draft.fields["zero_stability"] = message


def _record_k_verdicts(layers: list[stability.LayerCheck], start: int, draft: Draft) -> None:
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


def _note_limit(net: ir.Network, rec: Recurrence, draft: Draft) -> None:
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
    if any(e.has(sympy.AccumBounds) or ir.K in e.free_symbols for e in limit):
        # cos(pi*k/8), k % 3: the coefficients keep oscillating, with no limit to analyse.
        draft.notes.append(
            "some coefficient of M_k has no limit as k -> infinity (it oscillates): only the "
            "finite depth is covered (see amplification)"
        )
        return
    if any(not e.is_finite for e in limit):
        draft.notes.append("some coefficient of M_k grows without bound as k -> infinity")
        return
    rho = stability.charpoly(limit.applyfunc(lambda e: sympy.nsimplify(e, rational=True)))
    roots = stability.exact_roots(rho)
    if not stability.strictly_stable(roots):
        verdict = stability.root_condition(roots, None if rec.one_state else limit)
        multiple = [r for r in roots if r.on_circle and r.multiplicity > 1]
        if not verdict.ok:
            why = verdict.message
        elif multiple:
            why = (
                f"root {multiple[0].show()} is a root of multiplicity {multiple[0].multiplicity}"
                " on the unit circle (semisimple: still zero-stable)"
            )
        else:
            why = "a root other than 1 reaches the unit circle"
        draft.notes.append(
            f"as k -> infinity, rho -> {poly_text(rho)}: {why}; the limit loses strict stability, "
            "so only the finite depth is covered (see amplification)"
        )


# ---------------------------------------------------------------- symbolic conditions and learnable params
def fill_conditions(
    net: ir.Network, rec: Recurrence, draft: Draft, max_symbolic_slots: int
) -> None:
    matrix = rec.matrix.xreplace(param_values(net, keep_fixed_symbolic=True))
    symbolic_slots = len(rec.slots) > max_symbolic_slots and matrix.free_symbols - {ir.K}
    if symbolic_slots:
        draft.fields["conditions"] = None
        record_limit(
            net,
            draft,
            f"the stacked state has {len(rec.slots)} slots and rho depends on fixed params; "
            f"symbolic conditions are derived up to {max_symbolic_slots} slots",
        )
        return
    rho = stability.charpoly(sympy.Matrix(matrix))
    conditions, why = symbolic.stability_conditions(rho)
    _record_conditions(net, conditions, why, draft)


def _record_conditions(net: ir.Network, conditions, why, draft: Draft) -> None:
    draft.fields["conditions"] = None if conditions is None else tuple(conditions)
    if isinstance(why, symbolic.Limit):
        record_limit(net, draft, why)
    elif why:
        draft.notes.append(why)


def fill_learnable(net: ir.Network, rec: Recurrence, draft: Draft) -> None:
    learnable = [p for p in net.params if p.learnable and p.symbol in symbols_of(rec)]
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
            record_limit(net, draft, note)
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


# ---------------------------------------------------------------- multistage rules: one-step Runge-Kutta methods
def runge_kutta_layers(
    net: ir.Network, reading: runge_kutta.Reading, values: dict, exact_layers: int
) -> list[runge_kutta.Tableau]:
    """The tableau of the first layer, or of every exactly checked layer when it uses k;
    `stability.Undefined` at a layer where a coefficient has no value."""
    symbols = set()
    coefficients = (reading.keep, *reading.b_raw, *(x for row in reading.a_raw for x in row))
    for e in coefficients:
        symbols |= sympy.sympify(e).xreplace(values).free_symbols
    start = net.start
    count = min(net.depth, exact_layers) if ir.K in symbols else 1
    layers = []
    for k in range(start, start + count):
        at = _at_layer(values, k)
        if not all(stability.defined(sympy.sympify(e).xreplace(at)) for e in coefficients):
            raise stability.Undefined(
                f"at layer k={k}: a coefficient of the tableau is undefined (a division by zero)"
            )
        layers.append(runge_kutta.tableau(reading, at))
    return layers


def fill_runge_kutta(
    net: ir.Network, reading: runge_kutta.Reading, tab: runge_kutta.Tableau, draft: Draft
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


def record_runge_kutta_layers(layers: list[runge_kutta.Tableau], start: int, draft: Draft) -> None:
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


def fill_runge_kutta_conditions(
    net: ir.Network, reading: runge_kutta.Reading, draft: Draft
) -> None:
    keep = sympy.sympify(reading.keep).xreplace(param_values(net, keep_fixed_symbolic=True))
    conditions, why = symbolic.stability_conditions((-keep, sympy.Integer(1)))
    _record_conditions(net, conditions, why, draft)
