"""The typed IR: a network whose update statements are linear forms over tensor atoms.

Every tensor expression of a rule is, by the language's scalar-coefficient rule, a
linear combination `sum_j c_j * a_j` of *atoms* (a state at some lag, a local, a block
output, an elementwise map, a sum over history, the input) with *scalar* coefficients
c_j: sympy expressions in the params (as symbols) and the layer index `k`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

import sympy

from .ir_model import Args, Carry, Head, Model, Stage, Stem, Transition  # noqa: F401
from .source import Span

K = sympy.Symbol("k", integer=True, nonnegative=True)
# `L`: the depth the module is built with (its constructor's `depth`). The analysis reads a
# network at its declared layers (`at_depth`); the generated module at the depth it is built.
L = sympy.Symbol("L", integer=True, positive=True)
ONE = sympy.Integer(1)
# The feature size given to the generated constructor, in block arguments.
DIM = sympy.Symbol("dim", integer=True, positive=True)
# The feature space of the input; `state y: m` declares a state in another one, of size m.
DIM_SPACE = "dim"


def size_symbol(size: str) -> sympy.Symbol:
    """The symbol of a size in block arguments (`hidden=2*m`): `dim`, or a declared size."""
    return DIM if size == DIM_SPACE else sympy.Symbol(size, integer=True, positive=True)


def param_symbol(name: str) -> sympy.Symbol:
    return sympy.Symbol(f"p_{name}", real=True)


def symbol_param(symbol: sympy.Symbol) -> str | None:
    return symbol.name[2:] if symbol.name.startswith("p_") else None


# ---------------------------------------------------------------- tensor atoms
@dataclass(frozen=True, slots=True)
class StateAt:
    """State `name` at layer k + lag: lag 1 is x_{k+1}, 0 is x_k, -1 is x_{k-1}, ..."""

    name: str
    lag: int

    def show(self) -> str:
        return {1: f"{self.name}+", 0: self.name, -1: f"{self.name}-"}.get(
            self.lag, f"{self.name}[k{self.lag:+d}]"
        )


@dataclass(frozen=True, slots=True)
class Initial:
    """`x[0]`: the initial value of state `name`."""

    name: str

    def show(self) -> str:
        return f"{self.name}[0]"


@dataclass(frozen=True, slots=True)
class Local:
    """Local `name` of layer k + lag: lag 0 is this layer's value, -1 the previous layer's
    (`g-`), ...; before layer 0 a local's history equals its value at layer 0."""

    name: str
    lag: int = 0

    def show(self) -> str:
        return {0: self.name, -1: f"{self.name}-"}.get(self.lag, f"{self.name}[k{self.lag:+d}]")


@dataclass(frozen=True, slots=True)
class InputValue:
    def show(self) -> str:
        return "input"


@dataclass(frozen=True, slots=True)
class History:
    """`v[i + offset]` inside a `sum(i = ...)`: a state or local at the summation index."""

    name: str
    is_state: bool
    offset: int = 0

    def show(self) -> str:
        return f"{self.name}[i{self.offset:+d}]" if self.offset else f"{self.name}[i]"


@dataclass(frozen=True, slots=True)
class BlockOut:
    block: str
    arg: LinearForm
    adjoint: bool = False  # `K^T(arg)`: the adjoint of an operator block

    def show(self) -> str:
        return f"{self.block}{'^T' if self.adjoint else ''}({self.arg.show()})"


@dataclass(frozen=True, slots=True)
class MapOut:
    fn: str
    arg: LinearForm
    scalars: tuple[sympy.Expr, ...] = ()

    def show(self) -> str:
        extra = "".join(f", {s}" for s in self.scalars)
        return f"{self.fn}({self.arg.show()}{extra})"


@dataclass(frozen=True, slots=True)
class HistorySum:
    """`sum(i = lo..k, body)` with body a linear form over `History` atoms, coefficients in `var`.

    With `window` m the lower bound is k - m (a sliding window of m + 1 terms; the terms
    with i < 0 are absent, so the first layers sum fewer), and `lo` is 0."""

    var: sympy.Symbol
    lo: int
    body: LinearForm
    window: int | None = None

    def show(self) -> str:
        lo = self.lo if self.window is None else f"k-{self.window}"
        return f"sum({self.var} = {lo}..k, {self.body.show()})"

    def first_term(self, layer: int) -> int:
        """The smallest i summed at `layer`."""
        return self.lo if self.window is None else max(0, layer - self.window)


class ReductionKind(str, Enum):
    """A per-sample reduction of tensors to a scalar (language.md 5.6)."""

    DOT = "dot"  # sum of a*b over every non-batch dimension
    NORM = "norm"  # the Euclidean norm over every non-batch dimension


@dataclass(frozen=True, slots=True)
class Reduction:
    """`dot(a, b)` or `norm(a)`: one number per sample, broadcast back over the sample."""

    kind: ReductionKind
    args: tuple[LinearForm, ...]

    def show(self) -> str:
        return f"{self.kind.value}({', '.join(a.show() for a in self.args)})"


def reduction_symbol(index: int, reduction: Reduction) -> sympy.Symbol:
    """The symbol of the `index`-th reduction of a `DataScaled` factor: a norm and a
    `dot(a, a)` are >= 0 (so that `1/(dot(g, g) + 1e-12)` is known never to divide by 0)."""
    kind, args = reduction.kind, reduction.args
    if kind is ReductionKind.NORM or (kind is ReductionKind.DOT and args[0] == args[1]):
        return sympy.Symbol(f"_reduction{index}", nonnegative=True)
    return sympy.Symbol(f"_reduction{index}", real=True)


@dataclass(frozen=True, slots=True)
class DataScaled:
    """`factor * arg`, `factor` over `reduction_symbol(i, ...)` of each reduction i (and
    numbers, params): the part of a coefficient that depends on the data (its fixed
    factor stays in the linear form). The analysis puts such a rule outside the theory."""

    factor: sympy.Expr
    reductions: tuple[Reduction, ...]
    arg: LinearForm
    # The scalar as the source writes it (`dot(s, s)/max(dot(s, r), 1e-12)`), for messages.
    text: str = field(default="", compare=False, hash=False)

    def symbols(self) -> dict[sympy.Symbol, Reduction]:
        return {reduction_symbol(i, r): r for i, r in enumerate(self.reductions)}

    def show_factor(self) -> str:
        if self.text:
            return self.text
        names = {s: sympy.Symbol(r.show()) for s, r in self.symbols().items()}
        return str(self.factor.xreplace(names))

    def show(self) -> str:
        return f"({self.show_factor()})*({self.arg.show()})"


Atom = (
    StateAt | Initial | Local | InputValue | History | BlockOut | MapOut | HistorySum | DataScaled
)


def inner_forms(atom: Atom) -> tuple[LinearForm, ...]:
    """The forms an atom reads: an argument, a sum's body, a reduction's arguments."""
    if isinstance(atom, DataScaled):
        return (atom.arg,) + tuple(a for r in atom.reductions for a in r.args)
    inner = getattr(atom, "arg", None) or getattr(atom, "body", None)
    return () if inner is None else (inner,)


# sympy.simplify tries many rewritings and grows faster than the expression (a sum of 300
# params took half a second a call, and a statement calls it on every partial form).
# Past this many operations a coefficient takes the normal form of a rational function
# instead (`cancel`: exact, zero exactly when the coefficient is), linear-ish in its terms.
# Every coefficient of the catalog is far below it: their certificates are simplify's.
SIMPLIFY_MAX_OPS = 40


def simplified(coef: sympy.Expr) -> sympy.Expr:
    """`coef` simplified: by sympy.simplify when small, else by cancel (see above)."""
    if sympy.count_ops(coef) > SIMPLIFY_MAX_OPS:
        return sympy.cancel(coef)
    return sympy.simplify(coef)


def renamed(expr: sympy.Expr, symbols: dict) -> sympy.Expr:
    """`expr` with each symbol of `symbols` replaced by its value, all at once.

    One walk of the tree (xreplace): subs(..., simultaneous=True) walks it once a symbol,
    quadratic in a coefficient of many params (300 summed took seconds to print)."""
    return expr.xreplace(symbols)


def atom_key(atom: Atom) -> str:
    return f"{type(atom).__name__}:{atom.show()}"


@dataclass(frozen=True, slots=True)
class LinearForm:
    """`sum_j coef_j * atom_j`, terms in a canonical order, no zero coefficient."""

    terms: tuple[tuple[Atom, sympy.Expr], ...] = ()

    @staticmethod
    def of(atom: Atom, coef: sympy.Expr = ONE) -> LinearForm:
        return LinearForm(((atom, sympy.sympify(coef)),))

    @staticmethod
    def from_dict(coefs: dict) -> LinearForm:
        items = []
        for atom, coef in coefs.items():
            coef = simplified(coef) if coef.free_symbols else sympy.nsimplify(coef, rational=True)
            if coef != 0:
                items.append((atom, coef))
        items.sort(key=lambda item: atom_key(item[0]))
        return LinearForm(tuple(items))

    def as_dict(self) -> dict:
        return dict(self.terms)

    def __add__(self, other: LinearForm) -> LinearForm:
        coefs = self.as_dict()
        for atom, coef in other.terms:
            coefs[atom] = coefs.get(atom, sympy.Integer(0)) + coef
        return LinearForm.from_dict(coefs)

    def scale(self, factor: sympy.Expr) -> LinearForm:
        return LinearForm.from_dict({atom: coef * factor for atom, coef in self.terms})

    def atoms(self) -> list[Atom]:
        return [atom for atom, _ in self.terms]

    def walk(self):
        """Every atom, nested ones (block and map arguments, sum bodies) included."""
        for atom in self.atoms():
            yield atom
            for inner in inner_forms(atom):
                yield from inner.walk()

    def show(self) -> str:
        if not self.terms:
            return "0"
        parts = []
        for atom, coef in self.terms:
            if coef == 1:
                parts.append(atom.show())
            elif coef == -1:
                parts.append(f"-{atom.show()}")
            else:
                parts.append(f"({coef})*{atom.show()}")
        return " + ".join(parts)


# ---------------------------------------------------------------- declarations
class NetworkKind(str, Enum):
    """How a network's layers are computed (language.md section 4)."""

    EXPLICIT = "explicit"  # one iteration per layer
    IMPLICIT = "implicit"  # a layer solves for its own next iterate
    EQUILIBRIUM = "equilibrium"  # the fixed point of one shared update

    __hash__ = str.__hash__

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Bound:
    lo: sympy.Expr | None
    hi: sympy.Expr | None
    lo_closed: bool
    hi_closed: bool

    def show(self, name: str) -> str:
        parts = []
        if self.lo is not None:
            parts.append(f"{self.lo} {'<=' if self.lo_closed else '<'} ")
        parts.append(name)
        if self.hi is not None:
            parts.append(f" {'<=' if self.hi_closed else '<'} {self.hi}")
        return "".join(parts)

    def contains(self, value: float) -> bool:
        if self.lo is not None:
            lo = float(self.lo)
            if value < lo or (value == lo and not self.lo_closed):
                return False
        if self.hi is not None:
            hi = float(self.hi)
            if value > hi or (value == hi and not self.hi_closed):
                return False
        return True


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    value: sympy.Expr  # in K only (other fixed params substituted)
    learnable: bool
    per_layer: bool
    bound: Bound | None  # `positive` is (0, inf)
    positive: bool
    span: Span
    # One value per channel (the channel axis of the block layout), broadcast along the rest.
    per_channel: bool = False

    @property
    def symbol(self) -> sympy.Symbol:
        return param_symbol(self.name)

    @property
    def depends_on_k(self) -> bool:
        """Whether the value changes from layer to layer, or with the depth (`L`): a table
        over the layers, computed when the module is built."""
        return bool({K, L} & self.value.free_symbols)


@dataclass(frozen=True, slots=True)
class Block:
    name: str
    kind: str
    args: tuple[tuple[str, object], ...]  # int args as sympy expressions in `dim`, choices as str
    shared: bool
    layout: str
    span: Span
    target: str | None = None  # custom: "pkg.module:Class"

    def arg(self, key: str, default=None):
        return dict(self.args).get(key, default)

    @property
    def source_space(self) -> str:
        """The space its argument lives in: `dim`, or a size of the network (`m`)."""
        return self.arg("from") or self.arg("space") or DIM_SPACE

    @property
    def target_space(self) -> str:
        """The space of its output (another than `source_space` for an operator only)."""
        return self.arg("to") or self.arg("space") or DIM_SPACE


@dataclass(frozen=True, slots=True)
class Assign:
    """`target = form`: a state (`is_state`) gets its next value, or a local is defined."""

    target: str
    is_state: bool
    form: LinearForm
    span: Span
    text: str


@dataclass(frozen=True, slots=True)
class InitAssign:
    state: str
    form: LinearForm  # over Initial atoms of earlier-initialised states and InputValue
    span: Span


@dataclass(frozen=True, slots=True)
class SolverSpec:
    name: str
    options: tuple[tuple[str, float], ...]
    span: Span | None


@dataclass(frozen=True, slots=True)
class Network:
    name: str
    states: tuple[str, ...]
    init: tuple[InitAssign, ...]  # one per state, in order of evaluation
    params: tuple[Param, ...]
    blocks: tuple[Block, ...]
    depth: int
    equilibrium: bool
    statements: tuple[Assign, ...]
    output: str
    implicit: bool
    implicit_reasons: tuple[str, ...]
    rule: str
    span: Span
    source_text: str
    solver: SolverSpec | None = None
    backward: SolverSpec | None = None
    # The layer index k of the first layer: 0, or more for a model's stage that carries the
    # states of the stage before it and so continues its recurrence (schedules go on in k).
    start: int = 0
    # `checkpoint N`: the layers recomputed in groups of N in backward (None: off).
    checkpoint: int | None = None
    spans: dict = field(default_factory=dict, compare=False, hash=False)
    # `state x, y: m`: (state, size) of each state declared in a space other than dim.
    state_sizes: tuple[tuple[str, str], ...] = ()

    def space(self, state: str) -> str:
        """The space a state lives in: `dim`, or the size it is declared with."""
        return dict(self.state_sizes).get(state, DIM_SPACE)

    @property
    def sizes(self) -> tuple[str, ...]:
        """The sizes other than dim, in order of declaration: constructor arguments."""
        return tuple(dict.fromkeys(size for _, size in self.state_sizes))

    @property
    def reversible(self) -> bool:
        """`backward reversible`: layers undone in backward instead of kept (explicit rules)."""
        return self.backward is not None and self.backward.name == "reversible"

    @property
    def layout(self) -> str:
        return self.blocks[0].layout if self.blocks else "vector"

    def param(self, name: str) -> Param:
        return next(p for p in self.params if p.name == name)

    def block(self, name: str) -> Block:
        return next(b for b in self.blocks if b.name == name)

    @property
    def kind(self) -> NetworkKind:
        if self.equilibrium:
            return NetworkKind.EQUILIBRIUM
        return NetworkKind.IMPLICIT if self.implicit else NetworkKind.EXPLICIT


def substituted(value, mapping: dict):
    """`value` (a network, a model, any part of the IR) with every sympy expression in it
    given `xreplace(mapping)`; linear forms are built again (a coefficient may become 0)."""
    if isinstance(value, sympy.Basic):
        return value.xreplace(mapping)
    if isinstance(value, LinearForm):
        coefs: dict = {}
        for atom, coef in value.terms:
            key = substituted(atom, mapping)
            coefs[key] = coefs.get(key, sympy.Integer(0)) + coef.xreplace(mapping)
        return LinearForm.from_dict(coefs)
    if isinstance(value, (tuple, list)):
        return type(value)(substituted(v, mapping) for v in value)
    if isinstance(value, dict):
        return {k: substituted(v, mapping) for k, v in value.items()}
    if isinstance(value, Span) or not dataclasses.is_dataclass(value) or isinstance(value, type):
        return value
    changes = {
        f.name: substituted(getattr(value, f.name), mapping) for f in dataclasses.fields(value)
    }
    return dataclasses.replace(value, **changes)


def symbols_of(value) -> set:
    """Every sympy symbol in `value`, a network or any part of the IR."""
    if isinstance(value, sympy.Basic):
        return set(value.free_symbols)
    if isinstance(value, LinearForm):
        return set().union(*(symbols_of(a) | c.free_symbols for a, c in value.terms))
    if isinstance(value, (tuple, list)):
        return set().union(*(symbols_of(v) for v in value))
    if isinstance(value, dict):
        return set().union(*(symbols_of(v) for v in value.values()))
    if isinstance(value, Span) or not dataclasses.is_dataclass(value) or isinstance(value, type):
        return set()
    return set().union(*(symbols_of(getattr(value, f.name)) for f in dataclasses.fields(value)))


def reads_depth(net: Network) -> bool:
    """Whether a coefficient or param of `net` reads `L`, the depth it is built with."""
    return L in symbols_of((net.params, net.statements, net.init))


def at_depth(net: Network, depth: int | None = None) -> Network:
    """`net` with `L` replaced by `depth` (its declared layers by default): what the
    analysis and the checks read. The network itself when it does not read `L`."""
    if not reads_depth(net):
        return net
    return substituted(net, {L: sympy.Integer(net.depth if depth is None else depth)})


def validate(net: Network) -> None:
    """Invariants every later pass relies on (an internal check, in the spirit of fx's lint)."""
    states = set(net.states)
    assigned: set[str] = set()
    locals_: set[str] = set()
    for stmt in net.statements:
        for atom in stmt.form.walk():
            if isinstance(atom, Local):
                assert atom.name in locals_, f"local {atom.name} used before definition"
                assert atom.lag <= 0, f"local {atom.name} read ahead"
            if isinstance(atom, StateAt):
                assert atom.name in states, f"unknown state {atom.name}"
        if stmt.is_state:
            assert stmt.target not in assigned, f"state {stmt.target} assigned twice"
            assigned.add(stmt.target)
        else:
            assert stmt.target not in locals_, f"local {stmt.target} assigned twice"
            locals_.add(stmt.target)
    assert assigned == states, f"states never assigned: {sorted(states - assigned)}"
    assert {i.state for i in net.init} == states, "every state needs exactly one init"


# ---------------------------------------------------------------- what a layer carries
def state_lags(forms: Iterable[LinearForm], states: Iterable[str]) -> dict[str, int]:
    """How far back `forms` read each state: 0 where they read its current value x_k
    only (or nothing), 1 where they read x_{k-1}, ...; block and map arguments included."""
    lags = {s: 0 for s in states}
    for form in forms:
        for atom in form.walk():
            if isinstance(atom, StateAt) and atom.lag < 0:
                lags[atom.name] = max(lags[atom.name], -atom.lag)
    return lags


def read_lags(net: Network) -> dict[str, int]:
    """How far back a layer of `net` reads each state: the lags its layer loop keeps."""
    return state_lags((st.form for st in net.statements), net.states)


def stacked_slots(states: Iterable[str], lags: dict[str, int]) -> tuple[tuple[str, int], ...]:
    """(state, lag) of each state at each lag it is read at, its current value first: the
    stacked iterate s_k = (x_k, x_{k-1}, ..., y_k, ...) the analysis writes one layer for."""
    return tuple((s, -j) for s in states for j in range(lags.get(s, 0) + 1))


def lag_name(name: str, lag: int) -> str:
    """The variable of a state's or a local's value `lag` layers back: x_prev, x_prev2, ..."""
    return f"{name}_prev" if lag == 1 else f"{name}_prev{lag}"


@dataclass(frozen=True, slots=True)
class Slot:
    """A value the layer loop carries from one layer to the next: `StateAt(x, 0)` a state,
    `StateAt(x, -j)` its value j layers back, `Initial(x)` the x[0] a layer reads, a
    `HistorySum` its running total, `InputValue()` the input. `name` is the variable the
    module asks for; its namespace makes that a legal, unique Python name (a state
    `lambda` is `lambda_` there, a second sum `history_sum_`)."""

    atom: Atom
    name: str


def _makes_zeros(form: LinearForm) -> bool:
    """Whether lowering builds `form` as zeros shaped like the input: a zero statement,
    block or map argument, or the term of a sliding window summing nothing."""
    if not form.terms:
        return True
    return any(
        (isinstance(atom, (BlockOut, MapOut)) and not atom.arg.terms)
        or (isinstance(atom, HistorySum) and atom.window is not None and not atom.body.terms)
        for atom in form.walk()
    )


def reads_input(net: Network) -> bool:
    """Whether a layer of `net` reads the input: an `input` in its update, or a zero
    tensor it makes in the input's shape (`T(x - x)`)."""
    return any(InputValue() in st.form.walk() or _makes_zeros(st.form) for st in net.statements)


def carried_slots(net: Network) -> tuple[Slot, ...]:
    """What the layer loop of `net` carries from one layer to the next, in the order of the
    module's `slots` (a model's stage hands them on with `carry states`): each state;
    each state's earlier values as far back as a layer reads it (`x_prev`, `x_prev2`);
    the initial value of each state a layer reads as `x[0]` (`x0`), by name; each sum
    over history (its running total), in the order the update first reads them; and the
    input, where a layer reads it (`x`, or `input_` where the rule names something x).

    An equilibrium has no layer loop (its module carries nothing); these are the values
    its map reads.
    """
    lags = read_lags(net)
    atoms = [atom for st in net.statements for atom in st.form.walk()]
    slots = [Slot(StateAt(s, 0), s) for s in net.states]
    slots += [
        Slot(StateAt(s, -j), lag_name(s, j)) for s in net.states for j in range(1, lags[s] + 1)
    ]
    initial = sorted({atom.name for atom in atoms if isinstance(atom, Initial)})
    slots += [Slot(Initial(s), f"{s}0") for s in initial]
    sums = dict.fromkeys(atom for atom in atoms if isinstance(atom, HistorySum))
    slots += [Slot(total, "history_sum") for total in sums]
    if reads_input(net):
        names = {*net.states, *(b.name for b in net.blocks)}
        names |= {st.target for st in net.statements if not st.is_state}
        names |= {p.name for p in net.params if p.learnable}
        slots.append(Slot(InputValue(), "input_" if "x" in names else "x"))
    return tuple(slots)


@dataclass(frozen=True, slots=True)
class Program:
    """What `resolve` makes of one file: its networks and its models, each in source order.

    Iterating a program gives its networks, as `resolve` did before models existed.
    """

    networks: tuple[Network, ...] = ()
    models: tuple[Model, ...] = ()

    def __iter__(self):
        return iter(self.networks)

    def network(self, name: str) -> Network:
        return next(n for n in self.networks if n.name == name)

    def model(self, name: str) -> Model:
        return next(m for m in self.models if m.name == name)
