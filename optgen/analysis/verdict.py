"""The universality verdict of a certificate: the facts of its blocks and the reason it
converges, or the failure that `--strict` turns into an error.

A rule is guaranteed when every block keeps universal approximation and the rule is
convergent (zero-stable and consistent, or a consistent one-step Runge-Kutta method); a
learnable param waives a failed check; an equilibrium network has no verdict.
"""

from __future__ import annotations

from .. import ir
from ..errors import Diagnostic, Severity
from ..kinds.blocks import BLOCK_KINDS, two_layer_fact
from ..present import number
from . import runge_kutta
from .draft import Draft, deciding_param_span, statement_span, symbols_of
from .recurrence import Recurrence


# ---------------------------------------------------------------- the verdict
def _block_facts(net: ir.Network) -> list[tuple[bool | None, str]]:
    return [two_layer_fact(BLOCK_KINDS[b.kind], dict(b.args)) for b in net.blocks]


def block_reasons(net: ir.Network) -> list[str]:
    return [f"block {b.name}: {why}" for b, (_, why) in zip(net.blocks, _block_facts(net))]


def universality(net: ir.Network, rec: Recurrence, draft: Draft) -> bool | None:
    facts = [fact for fact, _ in _block_facts(net)]
    draft.reasons.extend(block_reasons(net))
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


def equilibrium_reading(net: ir.Network, draft: Draft) -> None:
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


def _convergence_reason(net: ir.Network, rec: Recurrence, draft: Draft) -> bool | None:
    f = draft.fields
    if f.get("zero_stable") and f.get("consistent"):
        h = f"h = {number(f['step'])}" if f.get("step") is not None else "h > 0"
        draft.reasons.append(f"convergent: zero-stable and consistent ({h})")
        return True
    if f.get("zero_stable") is None and f.get("consistent") is None:
        # A layer the checks could not evaluate (`convergence.fill_checks`): no verdict.
        draft.reasons.append(f"convergence {f['zero_stability']}")
        return None
    learnable = {p.symbol: p.name for p in net.params if p.learnable}
    failed = []
    statement = statement_span(net)
    for ok_key, msg_key, symbols, what in (
        ("zero_stable", "zero_stability", rec.matrix.free_symbols, "not zero-stable"),
        ("consistent", "consistency", symbols_of(rec), "not consistent"),
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
            deciding_param_span(net, rec.matrix.free_symbols)
            or (deciding_param_span(net, symbols) if about_step else None)
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
def runge_kutta_universality(
    net: ir.Network,
    reading: runge_kutta.Reading,
    layers: list[runge_kutta.Tableau],
    draft: Draft,
) -> bool | None:
    facts = [fact for fact, _ in _block_facts(net)]
    draft.reasons.extend(block_reasons(net))
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
    net: ir.Network, reading: runge_kutta.Reading, draft: Draft
) -> bool | None:
    """Waived when a learnable param enters the weights; otherwise no argument applies."""
    f = draft.fields
    message = f"not consistent: {f['consistency']}"
    learnable = sorted(p.name for p in net.params if p.learnable and p.symbol in reading.symbols())
    statement = statement_span(net)
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
    span = deciding_param_span(net, reading.symbols()) or statement
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
