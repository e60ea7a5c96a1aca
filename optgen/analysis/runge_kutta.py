"""A multistage rule read as a one-step Runge-Kutta method (analysis.md, extension).

A rule whose block is applied to a value that holds a block output (extragradient,
Heun, an explicit Douglas-Rachford step) is no linear multistep method, but with one
state and no history it is a one-step method for dx/dt = -T(x):

    K_i = T_i(x - sum_j a'_ij K_j),    x+ = a x - sum_i b'_i K_i

Stages are the distinct block evaluations, in the order the rule evaluates them. The
Butcher tableau is (a'_ij, b'_i) divided by the step h of the stage's block,
h_T = sum of b'_i over the stages of T; with several blocks the rule is an additive
Runge-Kutta method and each block gets its own h (the `steps` of the certificate).

A one-step method is zero-stable (rho(z) = z - a, and a = 1 for a consistent rule);
it converges when it is consistent: a = 1 and h > 0 for every block, i.e. the weights
sum to 1 once divided by h. Its order comes from the order conditions of the colored
rooted trees (Butcher; Kennedy-Carpenter for additive methods), checked up to
`MAX_ORDER`. Anything else (a lag, a second state, a stage that is not x plus block
outputs) raises `OutsideTheory`: a multistep and multistage mixture is not read.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import sympy

from .. import ir
from ..present import number
from .recurrence import OutsideTheory

ZERO = sympy.Integer(0)
ONE = sympy.Integer(1)
MAX_ORDER = 4  # order conditions are checked up to this order


@dataclass(frozen=True)
class Stage:
    """The i-th block evaluation (0-based, in the order the rule evaluates them)."""

    index: int


_X = "x"  # the key of the state's own term in a stage form


@dataclass(frozen=True)
class Reading:
    """The rule as written: the raw coefficients, sympy expressions in params and k."""

    state: str
    blocks: tuple[str, ...]  # block of each stage
    texts: tuple[str, ...]  # each stage as the user would read it, e.g. T(x - t*T(x))
    a_raw: tuple[tuple[sympy.Expr, ...], ...]  # a'_ij: coefficient of -K_j in stage i's argument
    b_raw: tuple[sympy.Expr, ...]  # b'_i: coefficient of -K_i in x+
    keep: sympy.Expr  # a: coefficient of x in x+

    def symbols(self) -> set:
        found = set(sympy.sympify(self.keep).free_symbols)
        for e in itertools.chain(self.b_raw, *self.a_raw):
            found |= sympy.sympify(e).free_symbols
        return found


# ---------------------------------------------------------------- reading the rule
class _StageReader:
    """Substitutes locals in statement order; every block call becomes a stage."""

    def __init__(self, state: str):
        self.state = state
        self.locals: dict[str, dict] = {}
        self.next_value: dict | None = None
        self.stages: list[tuple[str, tuple]] = []  # (block, argument form as sorted items)
        self.texts: list[str] = []

    def form(self, form: ir.LinearForm) -> dict:
        out: dict = {}
        for atom, coef in form.terms:
            for key, c in self.atom(atom).items():
                out[key] = out.get(key, ZERO) + coef * c
        return {k: v for k, v in ((k, sympy.cancel(v)) for k, v in out.items()) if v != 0}

    def atom(self, atom) -> dict:
        if isinstance(atom, ir.Local):
            return self.locals[atom.name]
        if isinstance(atom, ir.StateAt):
            if atom.lag == 0:
                return {_X: ONE}
            if atom.lag == 1 and self.next_value is not None:
                return self.next_value
            raise OutsideTheory(
                f"it reads {atom.show()}: a rule that mixes stages with history or the next "
                "iterate is not read as a one-step Runge-Kutta method"
            )
        if isinstance(atom, ir.BlockOut):
            return {self._stage(atom): ONE}
        raise OutsideTheory(
            f"it reads {atom.show()}: only affine combinations of the iterate and block "
            "outputs are read as a one-step Runge-Kutta method"
        )

    def _stage(self, out: ir.BlockOut) -> Stage:
        arg = self.form(out.arg)
        if sympy.simplify(arg.get(_X, ZERO) - 1) != 0:
            raise OutsideTheory(
                f"the stage {out.show()} reads {arg.get(_X, ZERO)}*{self.state}: a Runge-Kutta "
                f"stage is {self.state} plus block outputs"
            )
        key = (out.block, tuple(sorted(((_key_text(k), v) for k, v in arg.items()), key=str)))
        if key not in self.stages:
            self.stages.append(key)
            self.texts.append(out.show())
        return Stage(self.stages.index(key))


def _key_text(key) -> str:
    return key if isinstance(key, str) else f"K{key.index}"


def read(net: ir.Network) -> Reading:
    """The Runge-Kutta reading of `net`, or OutsideTheory with the reason it has none."""
    if len(net.states) != 1:
        raise OutsideTheory(
            f"it has {len(net.states)} states: only one-state rules are read as one-step "
            "Runge-Kutta methods"
        )
    if net.kind != ir.NetworkKind.EXPLICIT:
        raise OutsideTheory(
            f"it is {net.kind}: only explicit rules are read as Runge-Kutta methods"
        )
    state = net.states[0]
    reader = _StageReader(state)
    for stmt in net.statements:
        value = reader.form(stmt.form)
        if stmt.is_state:
            reader.next_value = value
        else:
            reader.locals[stmt.target] = value
    return _reading(reader, state)


def _reading(reader: _StageReader, state: str) -> Reading:
    used = _reachable(reader)
    if not used:
        raise OutsideTheory(f"{state}+ reads no block output, so it integrates no ODE")
    renumber = {old: new for new, old in enumerate(used)}
    a_raw = []
    for old in used:
        _, arg = reader.stages[old]
        row = [ZERO] * len(used)
        for key, coef in arg:
            if key != _X:
                row[renumber[int(key[1:])]] = -coef
        a_raw.append(tuple(row))
    b_raw = [ZERO] * len(used)
    for key, coef in reader.next_value.items():
        if isinstance(key, Stage):
            b_raw[renumber[key.index]] = -coef
    return Reading(
        state,
        tuple(reader.stages[old][0] for old in used),
        tuple(reader.texts[old] for old in used),
        tuple(a_raw),
        tuple(b_raw),
        reader.next_value.get(_X, ZERO),
    )


def _reachable(reader: _StageReader) -> list[int]:
    """The stages x+ depends on (a local that nothing reads is no stage), in order."""
    seen: set[int] = set()
    todo = [k.index for k in reader.next_value if isinstance(k, Stage)]
    while todo:
        i = todo.pop()
        if i in seen:
            continue
        seen.add(i)
        todo.extend(int(key[1:]) for key, _ in reader.stages[i][1] if key != _X)
    return sorted(seen)


def is_multistage(net: ir.Network) -> bool:
    """Whether some block reads a block output: the case the multistep reading refuses."""
    locals_with_block: set[str] = set()
    for stmt in net.statements:
        if not stmt.is_state and _holds_block(stmt.form, locals_with_block):
            locals_with_block.add(stmt.target)
    for stmt in net.statements:
        for atom in stmt.form.walk():
            if isinstance(atom, ir.BlockOut) and _holds_block(atom.arg, locals_with_block):
                return True
    return False


def _holds_block(form: ir.LinearForm, locals_with_block: set[str]) -> bool:
    return any(
        isinstance(a, ir.BlockOut) or (isinstance(a, ir.Local) and a.name in locals_with_block)
        for a in form.walk()
    )


# ---------------------------------------------------------------- the tableau at given values
@dataclass(frozen=True)
class Tableau:
    """The Butcher tableau of one layer (exact rationals), with the step of each block."""

    blocks: tuple[str, ...]
    texts: tuple[str, ...]
    keep: sympy.Expr
    steps: tuple[tuple[str, sympy.Expr], ...]  # h per block, in order of first stage
    A: tuple[tuple[sympy.Expr, ...], ...] | None  # None when some h is 0 (no normalisation)
    b: tuple[sympy.Expr, ...] | None

    @property
    def c(self) -> tuple[sympy.Expr, ...] | None:
        return None if self.A is None else tuple(sum(row, ZERO) for row in self.A)

    @property
    def step(self) -> sympy.Expr | None:
        values = {h for _, h in self.steps}
        return values.pop() if len(values) == 1 else None

    @property
    def consistent(self) -> bool:
        return self.keep == 1 and all(h > 0 for _, h in self.steps)

    def consistency(self) -> str:

        if self.keep != 1:
            return (
                f"x+ keeps {number(self.keep)}*x: rho(1) = {number(1 - self.keep)} != 0, so with "
                "T = 0 a constant is not a fixed point"
            )
        bad = next(((blk, h) for blk, h in self.steps if h <= 0), None)
        if bad is not None:
            sense = (
                "do not enter the update" if bad[1] == 0 else "integrate the ODE backward in time"
            )
            return (
                f"the weights of block {bad[0]} sum to h = {number(bad[1])}, not positive: "
                f"its stages {sense}"
            )
        shown = ", ".join(f"{number(h)} ({blk})" for blk, h in self.steps)
        if self.step is not None:
            shown = number(self.step)
        return f"rho(z) = z - 1 and the weights sum to 1 with the step h = {shown} > 0"

    def order(self) -> int:
        """The largest p <= MAX_ORDER whose order conditions all hold (0 when inconsistent)."""
        if not self.consistent or self.A is None:
            return 0
        colors = tuple(dict.fromkeys(self.blocks))
        for p in range(2, MAX_ORDER + 1):
            if not all(self._condition_holds(tree) for tree in _trees(p, colors)):
                return p - 1
        return MAX_ORDER

    def _condition_holds(self, tree) -> bool:
        color, _ = tree
        weights = [bi if blk == color else ZERO for bi, blk in zip(self.b, self.blocks)]
        phi = sum((w * u for w, u in zip(weights, self._stage_vector(tree))), ZERO)
        return sympy.nsimplify(phi - sympy.Rational(1, _density(tree))) == 0

    def _stage_vector(self, tree) -> list:
        _, children = tree
        n = len(self.blocks)
        out = [ONE] * n
        for child in children:
            child_color, _ = child
            inner = self._stage_vector(child)
            for i in range(n):
                out[i] *= sum(
                    (self.A[i][j] * inner[j] for j in range(n) if self.blocks[j] == child_color),
                    ZERO,
                )
        return out


def tableau(reading: Reading, values: dict) -> Tableau:
    """The tableau with every symbol (params, k) replaced by its value."""

    def num(e):
        return sympy.nsimplify(sympy.sympify(e).xreplace(values), rational=True)

    a_raw = [[num(e) for e in row] for row in reading.a_raw]
    b_raw = [num(e) for e in reading.b_raw]
    steps: dict[str, sympy.Expr] = {}
    for blk, w in zip(reading.blocks, b_raw):
        steps[blk] = steps.get(blk, ZERO) + w
    for blk in reading.blocks:  # a block only read inside other stages has h = 0
        steps.setdefault(blk, ZERO)
    normalisable = all(h != 0 for h in steps.values())
    A = b = None
    if normalisable:
        A = tuple(
            tuple(a_raw[i][j] / steps[reading.blocks[j]] for j in range(len(b_raw)))
            for i in range(len(b_raw))
        )
        b = tuple(w / steps[blk] for w, blk in zip(b_raw, reading.blocks))
    texts = tuple(
        _stage_text(reading.blocks[i], reading.state, a_raw[i]) for i in range(len(b_raw))
    )
    return Tableau(reading.blocks, texts, num(reading.keep), tuple(steps.items()), A, b)


def _stage_text(block: str, state: str, row: list) -> str:
    """`K2 = T(x - 0.5*K1)`: the stage with the coefficients of this layer."""

    terms = "".join(
        f" {'-' if a > 0 else '+'} {'' if abs(a) == 1 else number(abs(a)) + '*'}K{j + 1}"
        for j, a in enumerate(row)
        if a != 0
    )
    return f"{block}({state}{terms})"


# ---------------------------------------------------------------- rooted trees
def _trees(order: int, colors: tuple[str, ...]):
    """Colored rooted trees with `order` nodes (as (color, children)); repeats are harmless."""
    for color in colors:
        for children in _forests(order - 1, colors):
            yield (color, children)


def _forests(nodes: int, colors: tuple[str, ...]):
    """Ordered tuples of colored trees with `nodes` nodes in all."""
    if nodes == 0:
        yield ()
        return
    for first in range(1, nodes + 1):
        for tree in _trees(first, colors):
            for rest in _forests(nodes - first, colors):
                yield (tree,) + rest


def _size(tree) -> int:
    return 1 + sum(_size(child) for child in tree[1])


def _density(tree) -> int:
    """gamma(tree): its size times the densities of its subtrees."""
    product = _size(tree)
    for child in tree[1]:
        product *= _density(child)
    return product


# ---------------------------------------------------------------- what the certificate holds
@dataclass(frozen=True)
class Summary:
    """The tableau of the certificate (first layer), as plain floats, JSON-able."""

    stages: tuple[str, ...]  # each block evaluation as written, e.g. T(x - t*T(x))
    blocks: tuple[str, ...]
    A: tuple[tuple[float, ...], ...] | None
    b: tuple[float, ...] | None
    c: tuple[float, ...] | None
    order: int | None  # None when inconsistent
    max_order_checked: int = MAX_ORDER

    def as_dict(self) -> dict:
        return {
            "stages": list(self.stages),
            "blocks": list(self.blocks),
            "A": None if self.A is None else [list(row) for row in self.A],
            "b": None if self.b is None else list(self.b),
            "c": None if self.c is None else list(self.c),
            "order": self.order,
            "max_order_checked": self.max_order_checked,
        }


def summary(tab: Tableau, order: int | None, to_float) -> Summary:
    def row(values):
        return None if values is None else tuple(to_float(v) for v in values)

    return Summary(
        tab.texts,
        tab.blocks,
        None if tab.A is None else tuple(row(r) for r in tab.A),
        row(tab.b),
        row(tab.c),
        order,
    )
