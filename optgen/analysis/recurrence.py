"""From an IR network to the stacked linear recurrence of analysis.md section 2.

    s_{k+1} = M_k s_k - sum_j B_j T_j(C_j s_k + D_j s_{k+1})

`s_k` stacks every state with every lag it is read at, `(x_k, x_{k-1}, ..., y_k, ...)`.
Block calls become `BlockCall`s (B_j, C_j, D_j); everything else must be affine in the
states, or the rule lies outside the theory and `OutsideTheory` says why.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy

from .. import ir

ZERO = sympy.Integer(0)
ONE = sympy.Integer(1)

Slot = tuple[str, int]  # (state, lag), lag 0 is x_k, -1 is x_{k-1}, ...


class OutsideTheory(Exception):
    """The rule is not affine outside block calls; the message says why."""


@dataclass(frozen=True)
class BlockCall:
    """One distinct call T_j(C_j s_k + D_j s_{k+1}) and the column B_j that subtracts it."""

    block: str
    weights: tuple[tuple[str, sympy.Expr], ...]  # B_j: state -> weight of -T_j in its next value
    arg_now: tuple[tuple[Slot, sympy.Expr], ...]  # C_j: slot of s_k -> coefficient in the argument
    arg_next: tuple[tuple[str, sympy.Expr], ...]  # D_j: state -> coefficient of its next value
    reads_input: bool = False

    @property
    def single_iterate(self) -> tuple[str, int] | None:
        """(state, lag) when the argument is one iterate with coefficient 1, as in an LMM."""
        terms = [(slot, c) for slot, c in self.arg_now] + [((s, 1), c) for s, c in self.arg_next]
        if len(terms) == 1 and terms[0][1] == 1 and not self.reads_input:
            return terms[0][0]
        return None


@dataclass(frozen=True)
class Recurrence:
    states: tuple[str, ...]
    slots: tuple[Slot, ...]
    matrix: sympy.ImmutableMatrix  # M_k: entries in param symbols and k
    calls: tuple[BlockCall, ...]
    forcing: tuple[tuple[str, sympy.Expr], ...]  # coefficient of `input` in each next value
    notes: tuple[str, ...]

    @property
    def one_state(self) -> bool:
        return len(self.states) == 1

    @property
    def classical(self) -> bool:
        """A one-state rule whose blocks all read single iterates: rho and sigma of an LMM."""
        return self.one_state and all(call.single_iterate for call in self.calls)

    def index(self, slot: Slot) -> int:
        return self.slots.index(slot)


# ---------------------------------------------------------------- substitution
Form = dict  # atom -> sympy coefficient, atoms in "base" form


def _add(into: Form, atom, coef) -> None:
    into[atom] = into.get(atom, ZERO) + coef


def _clean(form: Form) -> Form:
    out = {}
    for atom, coef in form.items():
        coef = sympy.cancel(sympy.sympify(coef))
        if coef != 0:
            out[atom] = coef
    return out


def _has_block_or_sum(form: Form) -> ir.Atom | None:
    return next(
        (a for a in form if isinstance(a, (ir.BlockOut, ir.MapOut, ir.HistorySum, ir.Initial))),
        None,
    )


class _Substituter:
    """Replaces locals by their definitions and next values by their new values, in order."""

    def __init__(self, start: int = 0, schedules: dict | None = None):
        self.locals: dict[str, Form] = {}
        self.next_values: dict[str, Form] = {}
        self.start = start  # the k of the first layer
        self.schedules = schedules or {}  # fixed param symbol -> its value in k

    def form(self, form: ir.LinearForm, in_block: str | None = None) -> Form:
        out: Form = {}
        for atom, coef in form.terms:
            for base, c in self.atom(atom, in_block).items():
                _add(out, base, coef * c)
        return _clean(out)

    def atom(self, atom, in_block: str | None) -> Form:
        if isinstance(atom, ir.Local):
            value = self._local(atom.name, in_block)
            return value if atom.lag == 0 else _earlier(atom, value, self.start, self.schedules)
        if isinstance(atom, ir.StateAt) and atom.lag == 1 and in_block is None:
            return self.next_values[atom.name]
        if isinstance(atom, ir.DataScaled):
            raise OutsideTheory(
                f"the coefficient {atom.show_factor()} depends on the data (dot, norm): its "
                "value changes with the input, so the rule is not a linear multistep method "
                "with coefficients fixed per layer"
            )
        if isinstance(atom, ir.MapOut):
            raise OutsideTheory(
                f"{atom.fn}(...) is a fixed map applied to the iterate: the rule is not affine "
                "outside block calls, so it lies outside the theory"
            )
        if isinstance(atom, ir.BlockOut):
            if in_block is not None:
                raise OutsideTheory(
                    f"block {in_block} is applied to the output of block {atom.block}: a composition of blocks lies outside the theory"
                )
            return {
                ir.BlockOut(
                    atom.block, ir.LinearForm.from_dict(self.form(atom.arg, atom.block))
                ): ONE
            }
        if in_block is not None and isinstance(atom, (ir.Initial, ir.HistorySum)):
            raise OutsideTheory(
                f"block {in_block} reads {atom.show()}: a block applied to the initial iterate or a history sum lies outside the theory"
            )
        return {atom: ONE}

    def _local(self, name: str, in_block: str | None) -> Form:
        value = self.locals[name]
        culprit = _has_block_or_sum(value) if in_block is not None else None
        if culprit is not None:
            raise OutsideTheory(
                f"block {in_block} is applied to the local {name}, which holds {culprit.show()}: this lies outside the theory"
            )
        return value


def _earlier(local: ir.Local, value: Form, start: int = 0, schedules: dict | None = None) -> Form:
    """`g-`, `g[k-2]`: the value of g = F(s_k) at an earlier layer, F(s_{k+lag}); with
    x_{-1} = x_0 and the coefficients of the first layer before it (`earlier_coefficient`)
    this matches the language (before the first layer, g is its value there)."""
    out: Form = {}
    for atom, coef in value.items():
        if isinstance(atom, ir.HistorySum):
            raise OutsideTheory(
                f"{local.show()} reads an earlier value of {local.name}, which holds "
                f"{atom.show()}: this lies outside the theory"
            )
        for _ in range(-local.lag):
            atom = _shift_atom(atom)
        _add(out, atom, earlier_coefficient(coef, local.lag, start, schedules))
    return _clean(out)


def earlier_coefficient(
    coef: sympy.Expr, lag: int, start: int = 0, schedules: dict | None = None
) -> sympy.Expr:
    """The coefficient c(k) of a term read `-lag` layers back: c(k + lag) from the layer at
    which that earlier layer exists (k + lag >= start, the first layer's k), and c(start)
    before it, where the language reads the first layer's value (language.md 5.2). A
    coefficient like k/(k+1) is never evaluated at a layer before the first (k = -1 would
    divide by zero). A fixed param that follows a schedule in k is shifted with it."""
    coef = sympy.sympify(coef).xreplace(schedules or {})
    if lag == 0 or ir.K not in coef.free_symbols:
        return coef
    return sympy.Piecewise(
        (coef.subs(ir.K, ir.K + lag), ir.K >= start - lag), (coef.subs(ir.K, start), True)
    )


def substituted_updates(net: ir.Network) -> tuple[dict[str, Form], dict[str, Form]]:
    """Next value of every state and value of every local, over base atoms."""
    sub = _Substituter(net.start, schedules_of(net))
    for stmt in net.statements:
        value = sub.form(stmt.form)
        (sub.next_values if stmt.is_state else sub.locals)[stmt.target] = value
    return sub.next_values, sub.locals


# ---------------------------------------------------------------- differencing x[0] and sums over history
def _shift_form(form: ir.LinearForm) -> ir.LinearForm:
    return ir.LinearForm(tuple((_shift_atom(a), c) for a, c in form.terms))


def _shift_atom(atom):
    """The same atom one layer earlier."""
    if isinstance(atom, ir.StateAt):
        return ir.StateAt(atom.name, atom.lag - 1)
    if isinstance(atom, ir.BlockOut):
        return ir.BlockOut(atom.block, _shift_form(atom.arg))
    return atom  # input is the same at every layer


def schedules_of(net: ir.Network) -> dict:
    """Each fixed param that depends on k -> its value in k."""
    return {p.symbol: p.value for p in net.params if not p.learnable and p.depends_on_k}


def _sum_at_k(total: ir.HistorySum, locals_: dict[str, Form], schedules: dict) -> Form:
    """S_k - S_{k-1} for S_k = sum(i = lo..k, body): the body at i = k from layer lo on
    (a step function of k); with a window k - m, less the body at i = k - m - 1 from
    layer m + 1 on (the term that leaves the window)."""
    out: Form = {}
    for atom, coef in total.body.terms:
        if atom.offset != 0:
            raise OutsideTheory(
                f"{total.show()} reads {atom.show()}: only terms at i can be differenced"
            )
        value = {ir.StateAt(atom.name, 0): ONE} if atom.is_state else locals_[atom.name]
        enters = coef.subs(total.var, ir.K) * _from_layer(total.lo)
        for base, c in value.items():
            _add(out, base, enters * c)
        if total.window is not None:
            lag = total.window + 1
            leaves = coef.subs(total.var, ir.K - lag) * _from_layer(lag)
            for base, c in _earlier(ir.Local(atom.name, -lag), value, 0, schedules).items():
                _add(out, base, -leaves * c)
    return out


def _from_layer(lo: int) -> sympy.Expr:
    """1 at the layers k >= lo, else 0."""
    return ONE if lo == 0 else sympy.Piecewise((ONE, ir.K >= lo), (ZERO, True))


def needs_differencing(form: Form) -> bool:
    return any(isinstance(a, (ir.Initial, ir.HistorySum)) for a in form)


def _scaled_initial(
    form: Form, schedules: dict, depth: int, start: int = 0
) -> tuple[ir.Initial, sympy.Expr] | None:
    """The one x[0] of `form` whose coefficient a(k) follows a schedule in k, with a(k)."""
    found = []
    for atom, coef in form.items():
        if isinstance(atom, ir.Initial):
            value = sympy.sympify(coef).xreplace(schedules)
            if ir.K in value.free_symbols:
                found.append((atom, value))
    if not found:
        return None
    if len(found) > 1 or any(isinstance(a, ir.HistorySum) for a in form):
        atom, value = found[0]
        raise OutsideTheory(
            f"the coefficient {value} of {atom.show()} depends on k, so differencing the update"
            " does not remove it"
        )
    atom, value = found[0]
    vanishing = _zero_layers(value, depth, start)
    if vanishing:
        raise OutsideTheory(
            f"the coefficient {value} of {atom.show()} is 0 at k={vanishing[0]}, so x[0] cannot"
            " be recovered from the iterates there"
        )
    return atom, value


def _zero_layers(value: sympy.Expr, depth: int, start: int = 0) -> list:
    """The layers k >= start at which `value` (in k) is 0: solved for, or, where sympy has
    no method (a recursive schedule `tk(k)` has no closed form), those of the declared depth."""
    try:
        return [r for r in sympy.solve(value, ir.K) if r.is_integer and r >= start]
    except NotImplementedError:
        return [k for k in range(start, start + depth) if value.subs(ir.K, k) == 0]


def _differenced_with_ratio(
    state: str, form: Form, initial: ir.Initial, a: sympy.Expr, schedules: dict, start: int
) -> Form:
    """x_{k+1} = a(k) x0 + G_k with a(k) depending on k: after the first layer, x0 = (x_k -
    G_{k-1}) / a(k-1) gives x_{k+1} = r(k) (x_k - G_{k-1}) + G_k with r = a(k)/a(k-1); at
    the first layer (k = start), x0 is x_k itself. Exact at every layer (Halpern's lam =
    1/(k+2))."""
    ratio = sympy.simplify(a / a.subs(ir.K, ir.K - 1))
    later = _from_layer(start + 1)
    first = ONE - later  # 1 at the first layer
    out: Form = {}
    _add(out, ir.StateAt(state, 0), sympy.piecewise_fold(ratio * later + a * first))
    for atom, coef in form.items():
        if atom == initial:
            continue
        coef = sympy.sympify(coef).xreplace(schedules)
        _add(out, atom, coef)
        _add(
            out, _shift_atom(atom), -sympy.piecewise_fold(later * ratio * coef.subs(ir.K, ir.K - 1))
        )
    return _clean(out)


def differenced(
    state: str,
    form: Form,
    locals_: dict[str, Form],
    schedules: dict | None = None,
    depth: int = 1,
    start: int = 0,
) -> Form:
    """x_{k+1} = x_k + F_k - F_{k-1}, using x_k = F_{k-1}: x[0] cancels, a sum keeps its last term.

    `schedules` maps each fixed param that depends on k to its value: an x[0] whose
    coefficient follows one is differenced exactly, layer by layer (`_differenced_with_ratio`),
    where it is not 0 at a layer (of the declared `depth` when sympy cannot solve for k).
    F_{k-1} at the first layer (k = `start`) has the first layer's coefficients, as the
    language reads every value before the first layer (`earlier_coefficient`).
    """
    schedules = schedules or {}
    scaled = _scaled_initial(form, schedules, depth, start)
    if scaled is not None:
        return _differenced_with_ratio(state, form, *scaled, schedules, start)
    out: Form = {ir.StateAt(state, 0): ONE}
    for atom, coef in form.items():
        in_k = ir.K in sympy.sympify(coef).xreplace(schedules).free_symbols
        if isinstance(atom, (ir.Initial, ir.HistorySum)) and in_k:
            raise OutsideTheory(
                f"the coefficient {coef} of {atom.show()} depends on k, so differencing the update does not remove it"
            )
        if isinstance(atom, ir.Initial):
            continue
        if isinstance(atom, ir.HistorySum):
            for base, c in _sum_at_k(atom, locals_, schedules).items():
                _add(out, base, coef * c)
            continue
        _add(out, atom, coef)
        _add(out, _shift_atom(atom), -earlier_coefficient(coef, -1, start, schedules))
    return _clean(out)


# ---------------------------------------------------------------- stacking
def _block_call(out: ir.BlockOut, weights: dict[str, sympy.Expr]) -> BlockCall:
    now, nxt, reads_input = [], [], False
    for atom, coef in out.arg.terms:
        if isinstance(atom, ir.StateAt) and atom.lag == 1:
            nxt.append((atom.name, coef))
        elif isinstance(atom, ir.StateAt):
            now.append(((atom.name, atom.lag), coef))
        else:
            reads_input = True
    return BlockCall(out.block, tuple(sorted(weights.items())), tuple(now), tuple(nxt), reads_input)


def stack(
    states: tuple[str, ...], forms: dict[str, Form]
) -> tuple[tuple[Slot, ...], sympy.ImmutableMatrix, tuple[BlockCall, ...], dict]:
    # The lags the substituted forms read: deeper than the statements' own where a lagged
    # local (g- = T(x_{k-1})) or a differenced update reads an earlier iterate.
    read = (ir.LinearForm(tuple(form.items())) for form in forms.values())
    slots = ir.stacked_slots(states, ir.state_lags(read, states))
    where = {slot: i for i, slot in enumerate(slots)}
    matrix = sympy.zeros(len(slots), len(slots))
    calls: dict[ir.BlockOut, dict[str, sympy.Expr]] = {}
    forcing: dict[str, sympy.Expr] = {}
    for state in states:
        row = where[(state, 0)]
        for atom, coef in forms[state].items():
            if isinstance(atom, ir.StateAt):
                matrix[row, where[(atom.name, atom.lag)]] += coef
            elif isinstance(atom, ir.BlockOut):
                calls.setdefault(atom, {})[state] = -coef
            elif isinstance(atom, ir.InputValue):
                forcing[state] = coef
            else:  # pragma: no cover - substitution leaves no other atom
                raise OutsideTheory(f"{atom.show()} cannot be stacked")
    for (state, lag), row in where.items():
        if lag < 0:
            matrix[row, where[(state, lag + 1)]] = ONE
    ordered = sorted(calls.items(), key=lambda item: ir.atom_key(item[0]))
    block_calls = tuple(_block_call(out, weights) for out, weights in ordered)
    return slots, sympy.ImmutableMatrix(matrix), block_calls, forcing


def reduce_rule(net: ir.Network) -> Recurrence:
    """The stacked recurrence of `net`, or OutsideTheory with the reason."""
    spaces = spaces_reason(net)
    if spaces:
        raise OutsideTheory(spaces)
    next_values, locals_ = substituted_updates(net)
    schedules = schedules_of(net)
    notes = []
    forms = {}
    for state in net.states:
        form = next_values[state]
        if needs_differencing(form):
            form = differenced(state, form, locals_, schedules, net.depth, net.start)
            notes.append(
                f"{state}+ reads {state}[0] or a sum over history: analysed as the differenced update {state}+ = {_show(form)}"
            )
        forms[state] = form
    slots, matrix, calls, forcing = stack(net.states, forms)
    if forcing:
        notes.append(
            "the update reads input at every layer: it is analysed as a constant forcing term, left out of M"
        )
    if any(call.reads_input for call in calls):
        notes.append("a block reads input: that part of its argument is left out of C")
    return Recurrence(
        net.states, slots, matrix, calls, tuple(sorted(forcing.items())), tuple(notes)
    )


def spaces_reason(net: ir.Network) -> str | None:
    """Why a rule over states of several spaces, or with an adjoint, is outside the
    theory (the linear multistep reading of one state space, each block a gradient)."""
    adjoints = sorted(
        {a.block for st in net.statements for a in st.form.walk() if getattr(a, "adjoint", False)}
    )
    if not net.state_sizes and not adjoints:
        return None
    between = [b for b in net.blocks if b.source_space != b.target_space]
    parts = []
    if net.state_sizes:
        spaces = ", ".join(f"{s} in {size}" for s, size in net.state_sizes)
        count = 1 + len(net.sizes)
        parts.append(f"the states live in {count} spaces ({spaces}; the others in dim)")
    for b in between:
        back = f" and {b.name}^T maps back" if b.name in adjoints else ""
        parts.append(f"{b.name} maps {b.source_space} to {b.target_space}{back}")
    moved = {b.name for b in between}
    parts += [f"{name}^T is the adjoint of {name}" for name in adjoints if name not in moved]
    return (
        "; ".join(parts) + ": linear operators, not gradients, and the theory reads a rule "
        "on one space whose blocks stand for gradients"
    )


def user_names(expr: sympy.Expr) -> sympy.Expr:
    """`expr` with every param symbol `p_beta` shown as the user's name `beta`."""
    swap = {
        s: sympy.Symbol(ir.symbol_param(s), real=True)
        for s in expr.free_symbols
        if ir.symbol_param(s)
    }
    return expr.xreplace(swap)


def iverson(expr: sympy.Expr) -> sympy.Expr:
    """`expr` with each step function Piecewise((c, k >= lo), (0, True)) of a sum from a
    later layer shown as c*[k >= lo] (1 from layer lo on, else 0), and a coefficient read
    at an earlier layer, Piecewise((c(k-1), k >= 1), (c(0), True)), as
    c(k-1)*[k >= 1] + c(0)*[k < 1]."""

    def bracket(piecewise: sympy.Piecewise) -> sympy.Expr:
        (value, condition), rest = piecewise.args[0], piecewise.args[1:]
        if len(rest) != 1 or rest[0][1] != sympy.true:
            return piecewise
        shown = value * sympy.Symbol(f"[{condition}]")
        if rest[0][0] == 0:
            return shown
        return shown + rest[0][0] * sympy.Symbol(f"[{condition.negated}]")

    return sympy.sympify(expr).replace(lambda e: isinstance(e, sympy.Piecewise), bracket)


def _show(form: Form) -> str:
    return ir.LinearForm(
        tuple((a, iverson(user_names(c))) for a, c in ir.LinearForm.from_dict(form).terms)
    ).show()
