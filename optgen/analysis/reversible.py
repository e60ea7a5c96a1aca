"""`backward reversible`: a layer undone from the slots after it (language.md section 15).

One layer of an explicit rule maps the slots s_k (every state at every lag it is read at)
to s_{k+1} = M s_k + sum_j G_j T_j(a_j) + F input, where a_j, the argument of block call
j, is affine in s_k, s_{k+1} and the input. The layer can be undone without storing
anything when

* M is invertible: det M is, up to sign, the product of the coefficients of each state's
  oldest slot (heavy ball: -beta on x-), so the oldest slot is solvable from the update;
* every block argument is known from s_{k+1} alone: its part C_j s_k equals
  C_j M^-1 (s_{k+1} - sum_i G_i T_i - F input), so C_j M^-1 G_i must vanish for every call
  i (heavy ball's T(x_k) reads x_k, which s_{k+1} holds as its lag; gd's T(x_k) reads x_k,
  which s_{k+1} = x_k - t*T(x_k) gives back only through T itself).

Then s_k = M^-1 (s_{k+1} - sum_j G_j T_j(a_j) - F input), each a_j a linear form over
s_{k+1}: `Inverse` holds those forms, which `lower.py` emits as the module's
`_inverse_layer`.

When C_j M^-1 G_i does not vanish (Nesterov: x+ = y - t*T(y) gives back y only as
y = x+ + t*T(y)), the argument is known only through an equation
a_j = known_j + sum_i K_ji T_i(a_i), K_ji = -C_j M^-1 G_i. Backward solves it by the
fixed-point iteration a <- known + K T(a) started at `known` (`Solved`), which converges
when sum_i |K_ji| Lip(T_i) < 1 (Nesterov: t*Lip(T) < 1). A rule with a single slot (gd)
stays an error: it keeps no earlier iterate, and undoing it would be running the implicit
step backwards, not inverting a recurrence. Coefficients keep the params as symbols (the code prints them by name);
the checks substitute the fixed params' values and the learnable ones' start values.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy
import sympy

from .. import ir
from .recurrence import OutsideTheory, needs_differencing, substituted_updates

Slot = tuple[str, int]  # (state, lag): lag 0 is x_k, -1 is x_{k-1}, ...
MAX_SLOTS = 12  # the inverse is computed exactly (sympy): larger stacks are refused
# float32 resolves about 1.2e-7 relative (2^-23). A rounding error grown by the
# amplification past 1e-3 of the state leaves the reconstructed states, and so the
# gradients, fewer than three correct digits: the compiler warns.
FLOAT32_EPS = 2.0**-23
FLOAT32_ERROR_LIMIT = 1e-3


class NotReversible(Exception):
    """The rule cannot be undone layer by layer; the message says why, the hint what would."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


@dataclass(frozen=True)
class Solved:
    """A block argument rebuilt by a fixed-point solve: `unknown` (an `ir.Local` standing
    for the argument's value in the other forms) satisfies unknown = `equation`, a linear
    form over the slots after the layer, the input and block calls (some of them reading
    `unknown`). `known` is the equation without its block calls: the iteration's start."""

    unknown: ir.Local
    call: ir.BlockOut  # the layer's call, its argument over the slots before the layer
    equation: ir.LinearForm
    known: ir.LinearForm
    coupling: tuple[tuple[str, sympy.Expr], ...]  # (block, K_ji): the contraction condition


@dataclass(frozen=True)
class Inverse:
    """Layer k undone. Atoms over the slots after the layer: `ir.StateAt(s, lag + 1)` is
    slot (s, lag) of s_{k+1} (x_{k+1} is StateAt(x, 1), its lag x_k is StateAt(x, 0)),
    and the unknowns of `solves` (computed first, in this order)."""

    slots: tuple[Slot, ...]
    before: tuple[tuple[Slot, ir.LinearForm], ...]  # each slot of s_k, over those of s_{k+1}
    inverse_matrix: sympy.Matrix  # M^-1, params as symbols (the amplification reads it)
    solves: tuple[Solved, ...] = ()

    def solved_slots(self) -> set[Slot]:
        """The slots whose value comes through a solve (the others are exact)."""
        unknowns = {s.unknown for s in self.solves}
        return {
            slot
            for slot, form in self.before
            if any(isinstance(a, ir.Local) and a in unknowns for a in form.walk())
        }


def after_atom(slot: Slot) -> ir.StateAt:
    """The atom standing for slot `slot` of s_{k+1} in the forms of an `Inverse`."""
    state, lag = slot
    return ir.StateAt(state, lag + 1)


def _values(net: ir.Network) -> dict:
    """Fixed params at their values, learnable ones at their start values (the checks')."""
    return {p.symbol: p.value for p in net.params}


def _is_zero(expr: sympy.Expr, values: dict) -> bool:
    """Zero at the params' values, for every layer k (k stays a symbol)."""
    return sympy.simplify(sympy.sympify(expr).xreplace(values)) == 0


def _singular_layers(det: sympy.Expr, net: ir.Network, values: dict) -> list[int]:
    det = sympy.simplify(sympy.sympify(det).xreplace(values))
    if ir.K not in det.free_symbols:
        return list(range(net.start, net.start + net.depth)) if det == 0 else []
    fn = sympy.lambdify(ir.K, det, "math")
    return [k for k in range(net.start, net.start + net.depth) if abs(fn(k)) < 1e-300]


def invert(net: ir.Network) -> Inverse:
    """The inverse of one layer of `net`, or NotReversible saying why there is none."""
    try:
        next_values, _ = substituted_updates(net)
    except OutsideTheory as why:
        raise NotReversible(
            f"network {net.name} is not reversible: {why}",
            "backward reversible needs an update that is affine outside its block calls",
        ) from None
    history = next(
        (a for st in net.statements for a in st.form.walk() if isinstance(a, ir.Local) and a.lag),
        None,
    )
    if history is not None:
        raise NotReversible(
            f"network {net.name} is not reversible: it reads {history.show()}, the history of"
            " a local, which the layer's slots do not hold",
            "write the block at the earlier iterate (T(x-)) or make the local a state",
        )
    for state in net.states:
        if needs_differencing(next_values[state]):
            raise NotReversible(
                f"network {net.name} is not reversible: {state}+ reads {state}[0] or a sum over"
                " history, which a layer cannot give back",
                "write the rule with lags (x-, x[k-2]) instead",
            )
    slots = ir.stacked_slots(net.states, ir.read_lags(net))
    if len(slots) > MAX_SLOTS:
        raise NotReversible(
            f"network {net.name} has {len(slots)} slots; backward reversible inverts at most"
            f" {MAX_SLOTS} exactly"
        )
    where = {slot: i for i, slot in enumerate(slots)}
    n = len(slots)
    matrix = sympy.zeros(n, n)
    forcing = sympy.zeros(n, 1)
    columns: dict[ir.BlockOut, sympy.Matrix] = {}
    for state in net.states:
        row = where[(state, 0)]
        for atom, coef in next_values[state].items():
            if isinstance(atom, ir.StateAt):
                matrix[row, where[(atom.name, atom.lag)]] += coef
            elif isinstance(atom, ir.BlockOut):
                columns.setdefault(atom, sympy.zeros(n, 1))[row] += coef
            elif isinstance(atom, ir.InputValue):
                forcing[row] += coef
            else:  # pragma: no cover - substitution leaves no other atom outside blocks
                raise NotReversible(f"network {net.name} is not reversible: {atom.show()}")
    for (state, lag), row in where.items():
        if lag < 0:
            matrix[row, where[(state, lag + 1)]] = sympy.Integer(1)
    values = _values(net)
    _check_invertible(net, matrix, slots, values)
    inverse = matrix.inv(method="LU").applyfunc(sympy.cancel)
    calls: dict[ir.BlockOut, ir.BlockOut] = {}
    couplings: dict[ir.BlockOut, dict] = {}
    for atom in sorted(columns, key=ir.atom_key):
        known, coupling = _argument_after(atom, inverse, columns, forcing, where, values)
        calls[atom] = ir.BlockOut(atom.block, known)
        if coupling:
            couplings[atom] = coupling
    _substitute_exact(calls, couplings)
    if couplings and n == 1:
        raise NotReversible(_block_message(net, next(iter(couplings))), _HINT)
    solves = _solves(calls, couplings)
    before = []
    for row, slot in enumerate(slots):
        coefs: dict = {}
        for col, other in enumerate(slots):
            _add(coefs, after_atom(other), inverse[row, col])
        for atom, column in columns.items():
            _add(coefs, calls[atom], -(inverse.row(row) * column)[0])
        _add(coefs, ir.InputValue(), -(inverse.row(row) * forcing)[0])
        before.append((slot, _form(coefs, values)))
    return Inverse(slots, tuple(before), inverse, solves)


def _substitute_exact(calls: dict, couplings: dict) -> None:
    """An argument reading only calls known exactly is exact too (their outputs enter its
    form): what is left in `couplings` needs a solve."""
    changed = True
    while changed:
        changed = False
        for atom, coupling in list(couplings.items()):
            if any(other in couplings for other in coupling):
                continue
            extra = ir.LinearForm.from_dict({calls[o]: c for o, c in coupling.items()})
            calls[atom] = ir.BlockOut(atom.block, calls[atom].arg + extra)
            del couplings[atom]
            changed = True


def _solves(calls: dict, couplings: dict) -> tuple[Solved, ...]:
    """The arguments known only through an equation in the blocks: each becomes an unknown,
    and `calls` maps its block call to one reading the unknown (the solve's result)."""
    found = []
    unknowns = {}
    for index, atom in enumerate(couplings):
        arg = atom.arg.show()
        name = arg if arg.isidentifier() else f"{atom.block}_arg"
        suffix = "" if len(couplings) == 1 else f"_{index}"
        unknowns[atom] = ir.Local(f"{name}{suffix}")
    knowns = {atom: calls[atom].arg for atom in couplings}
    for atom, local in unknowns.items():
        calls[atom] = ir.BlockOut(atom.block, ir.LinearForm.of(local))
    for atom, local in unknowns.items():
        coupling = couplings[atom]
        equation = knowns[atom] + ir.LinearForm.from_dict(
            {calls[other]: coef for other, coef in coupling.items()}
        )
        blocks = tuple((other.block, coef) for other, coef in coupling.items())
        found.append(Solved(local, atom, equation, knowns[atom], blocks))
    return tuple(found)


def _add(coefs: dict, atom, coef) -> None:
    coefs[atom] = coefs.get(atom, sympy.Integer(0)) + coef


def _form(coefs: dict, values: dict) -> ir.LinearForm:
    """A linear form without the terms whose coefficient is zero at the params' values."""
    kept = {a: sympy.cancel(c) for a, c in coefs.items() if not _is_zero(c, values)}
    return ir.LinearForm.from_dict(kept)


def _check_invertible(net: ir.Network, matrix, slots, values) -> None:
    singular = _singular_layers(matrix.det(method="berkowitz"), net, values)
    if not singular:
        return
    lags = ir.read_lags(net)
    oldest = [(s, -lags[s]) for s in net.states]
    names = ", ".join(ir.StateAt(s, lag).show() for s, lag in oldest)
    where = "" if len(singular) == net.depth else f" at layer k={singular[0]}"
    if len(net.states) == 1:
        message = (
            f"network {net.name} is not reversible: the coefficient of its oldest slot {names}"
            f" in {net.states[0]}+ is 0{where}, so {names} cannot be recovered from the later"
            " iterates"
        )
    else:
        message = (
            f"network {net.name} is not reversible: the coefficients on its oldest slots"
            f" ({names}) make the layer's recurrence matrix singular{where}, so they cannot"
            " be recovered from the next layer's slots"
        )
    raise NotReversible(message, "a momentum term beta*(x - x-) with beta != 0 is reversible")


def _argument_after(atom: ir.BlockOut, inverse, columns, forcing, where, values):
    """The block call's argument over the slots after the layer, and what it reads of the
    layer's block calls {call: K} (empty when the argument is known exactly)."""
    now = sympy.zeros(1, len(where))
    coefs: dict = {}
    for arg_atom, coef in atom.arg.terms:
        if isinstance(arg_atom, ir.StateAt) and arg_atom.lag == 1:
            _add(coefs, after_atom((arg_atom.name, 0)), coef)
        elif isinstance(arg_atom, ir.StateAt):
            now[where[(arg_atom.name, arg_atom.lag)]] += coef
        else:  # the input
            _add(coefs, arg_atom, coef)
    recovered = (now * inverse).applyfunc(sympy.cancel)
    coupling = {}
    for other in sorted(columns, key=ir.atom_key):
        coef = sympy.cancel(-(recovered * columns[other])[0])
        if not _is_zero(coef, values):
            coupling[other] = coef
    for col, slot in enumerate(where):
        _add(coefs, after_atom(slot), recovered[col])
    _add(coefs, ir.InputValue(), -(recovered * forcing)[0])
    return _form(coefs, values), coupling


_HINT = (
    "a reversible layer applies its blocks to values the next layer still holds: heavy ball"
    " x+ = x - t*T(x) + beta*(x - x-) (x is x+'s lag), a momentum ResNet v+ = beta*v - t*T(x);"
    " x+ = x + v+ (x = x+ - v+); or Nesterov's x+ = y - t*T(y); y = x+ + beta*(x+ - x), whose y"
    " backward rebuilds by a fixed-point solve"
)


def _block_message(net: ir.Network, atom: ir.BlockOut) -> str:
    state = net.states[0]
    return (
        f"network {net.name} is not reversible: {state}+ keeps no earlier iterate"
        f" (no lag such as {state}-), so {atom.arg.show()}, which block {atom.block} reads,"
        f" comes back from {state}+ only by solving an equation in {atom.block}"
    )


# ---------------------------------------------------------------- rounding through the depth
def amplification(net: ir.Network, inv: Inverse) -> float | None:
    """max_j ||M_j^-1 ... M_{D-1}^-1|| (2-norm): how much a rounding error in the last
    layer's slots grows while the states are rebuilt back to layer j. The blocks'
    contribution is neglected. None when it overflows float64."""
    values = _values(net)
    matrix = inv.inverse_matrix.xreplace(values).applyfunc(sympy.cancel)
    fn = sympy.lambdify(ir.K, matrix, "numpy")
    constant = ir.K not in matrix.free_symbols
    fixed = numpy.array(fn(0), dtype=float) if constant else None
    product = numpy.eye(len(inv.slots))
    worst = 0.0
    with numpy.errstate(over="ignore", invalid="ignore"):
        for k in reversed(range(net.start, net.start + net.depth)):
            layer = fixed if constant else numpy.array(fn(k), dtype=float)
            product = layer @ product  # s_k = M_k^-1 s_{k+1}
            if not numpy.isfinite(product).all():
                return None
            worst = max(worst, float(numpy.linalg.norm(product, 2)))
    return worst if numpy.isfinite(worst) else None


def growth(net: ir.Network, inv: Inverse) -> float | None:
    """The spectral radius of the last layer's inverse matrix: the factor by which the
    amplification grows with each layer past the declared depth (for a rule whose
    coefficients do not depend on k, exactly so in the long run). The generated module
    uses it to check a depth given to its constructor. None when not finite."""
    values = _values(net)
    matrix = inv.inverse_matrix.xreplace(values).xreplace({ir.K: net.start + net.depth - 1})
    try:
        numeric = numpy.array(matrix.evalf(), dtype=float)
    except (TypeError, ValueError):
        return None
    if not numpy.isfinite(numeric).all():
        return None
    return float(max(abs(numpy.linalg.eigvals(numeric))))


class Reconstruction(str, Enum):
    """How backward rebuilds a slot of the layer before from the slots after it."""

    EXACT = "exact"
    FIXED_POINT = "fixed-point solve"


def summary(net: ir.Network) -> dict:
    """The certificate's `reversible` field."""
    inv = invert(net)
    amp = amplification(net, inv)
    note = (
        f"a rounding error in the last layer's states grows by at most this factor while"
        f" backward rebuilds the states of the {net.depth} layers from the later ones"
        " (the norm of the product of the inverse layer matrices, with the blocks'"
        " contribution neglected)"
    )
    if amp is None:
        note += "; it overflows float64"
    solved = inv.solved_slots()
    how = {
        ir.StateAt(*slot)
        .show(): (Reconstruction.FIXED_POINT if slot in solved else Reconstruction.EXACT)
        .value
        for slot in inv.slots
    }
    solves = solve_summaries(net, inv.solves)
    for s in solves:
        note += (
            f"; {s['argument']}, which block {s['block']} reads, is rebuilt by the fixed-point"
            f" iteration {s['iteration']} started at {s['start']}, which converges when"
            f" {s['condition']}"
        )
    field = {
        "amplification": amp,
        "growth": growth(net, inv),
        "reconstruction": how,
        "note": note,
    }
    if solves:
        field["solves"] = solves
    return {**field, "float32_ok": float32_carries(amp)}


def _named(net: ir.Network, expr) -> sympy.Expr:
    return sympy.sympify(expr).xreplace({p.symbol: sympy.Symbol(p.name) for p in net.params})


def _shown(net: ir.Network, form: ir.LinearForm, names: dict) -> str:
    """A form over the slots after the layer, read with the rule's names (x+ for x_{k+1},
    t for a param), each unknown printed as the argument it stands for; the states first,
    then the block calls."""
    text = ""
    ordered = sorted(form.terms, key=lambda term: isinstance(term[0], ir.BlockOut))
    for atom, coef in ordered:
        if isinstance(atom, ir.BlockOut):
            arg = ir.LinearForm(tuple((names.get(a, a), c) for a, c in atom.arg.terms))
            atom = ir.BlockOut(atom.block, arg)
        coef = _named(net, coef)
        sign, coef = ("-", -coef) if coef.could_extract_minus_sign() else ("+", coef)
        factor = "" if coef == 1 else (f"{coef}*" if coef.is_Atom else f"({coef})*")
        if not text:
            text = f"{'-' if sign == '-' else ''}{factor}{atom.show()}"
        else:
            text += f" {sign} {factor}{atom.show()}"
    return text or "0"


def _lipschitz_factor(net: ir.Network, coef) -> str:
    named = _named(net, coef)
    value = sympy.sympify(coef).xreplace(_values(net))
    positive = value.is_number and bool(value > 0)
    return str(named) if positive else f"|{named}|"


def solve_summaries(net: ir.Network, solves: tuple[Solved, ...]) -> list[dict]:
    """What the certificate says of each solve: the iteration and when it converges."""
    names = {s.unknown: ir.Local(s.call.arg.show()) for s in solves}
    found = []
    for solve in solves:
        factors = []
        for block, coef in solve.coupling:
            factor = _lipschitz_factor(net, coef)
            factors.append(f"Lip({block})" if factor == "1" else f"{factor}*Lip({block})")
        arg = solve.call.arg.show()
        found.append(
            {
                "block": solve.call.block,
                "argument": arg,
                "iteration": f"{arg} <- {_shown(net, solve.equation, names)}",
                "start": _shown(net, solve.known, names),
                "condition": " + ".join(factors) + " < 1",
            }
        )
    return found


def float32_carries(amp: float | None) -> bool:
    return amp is not None and amp * FLOAT32_EPS <= FLOAT32_ERROR_LIMIT
