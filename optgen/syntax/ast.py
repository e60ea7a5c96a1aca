"""The surface syntax of `.opt` files as frozen dataclasses, built by `parse.py`.

Nothing here is checked for meaning; `resolve.py` does that.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..source import Span


# ---------------------------------------------------------------- expressions
@dataclass(frozen=True, slots=True)
class Number:
    """A decimal literal, kept as written; `resolve.py` reads it exactly."""

    text: str
    span: Span


@dataclass(frozen=True, slots=True)
class Name:
    """`x`: a state (current or already-updated value), local, param, `k`, `input`, ..."""

    id: str
    span: Span


@dataclass(frozen=True, slots=True)
class NextName:
    """`x+`: the next iterate."""

    id: str
    span: Span


@dataclass(frozen=True, slots=True)
class PrevName:
    """`x-`: the previous iterate."""

    id: str
    span: Span


@dataclass(frozen=True, slots=True)
class Indexed:
    """`x[k+1]`, `x[k-2]`, `x[0]`, `g[i]`."""

    id: str
    index: Expr
    span: Span


@dataclass(frozen=True, slots=True)
class Call:
    """`T(y)`, `relu(e)`, `softshrink(e, lam)`; `K^T(y)` (`adjoint`): the adjoint of an
    operator block."""

    func: str
    args: tuple[Expr, ...]
    span: Span
    func_span: Span
    adjoint: bool = False


@dataclass(frozen=True, slots=True)
class HistorySum:
    """`sum(i = lo..hi, body)`."""

    func: str
    var: str
    lo: Expr
    hi: Expr
    body: Expr
    span: Span


@dataclass(frozen=True, slots=True)
class Binary:
    op: str  # one of + - * / % ^
    left: Expr
    right: Expr
    span: Span


@dataclass(frozen=True, slots=True)
class Neg:
    operand: Expr
    span: Span


Expr = Number | Name | NextName | PrevName | Indexed | Call | HistorySum | Binary | Neg


def sub_expressions(node) -> tuple:
    """The expressions directly inside `node` (operands, index, arguments, sum parts)."""
    if isinstance(node, Binary):
        return (node.left, node.right)
    if isinstance(node, Neg):
        return (node.operand,)
    if isinstance(node, Indexed):
        return (node.index,)
    if isinstance(node, Call):
        return node.args
    if isinstance(node, HistorySum):
        return (node.lo, node.hi, node.body)
    return ()


def walk(node):
    """`node` and every expression inside it, without recursion (a sum of 10,000 terms is a
    tree 10,000 deep), parents before children, left before right."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(sub_expressions(current)))


def fold(node, leaf, negate, combine):
    """Evaluate the sums, products and signs of `node` bottom-up without recursion, in the
    order a recursive evaluation would (the left operand wholly before the right):
    `leaf(n)` for any other node, `negate(neg, value)`, `combine(binary, left, right)`."""
    stack: list[tuple[object, bool]] = [(node, False)]
    values: list = []
    while stack:
        current, operands_done = stack.pop()
        if isinstance(current, Binary):
            if operands_done:
                right = values.pop()
                values.append(combine(current, values.pop(), right))
            else:
                stack += [(current, True), (current.right, False), (current.left, False)]
        elif isinstance(current, Neg):
            if operands_done:
                values.append(negate(current, values.pop()))
            else:
                stack += [(current, True), (current.operand, False)]
        else:
            values.append(leaf(current))
    return values[0]


# ---------------------------------------------------------------- declarations
@dataclass(frozen=True, slots=True)
class Ident:
    id: str
    span: Span


@dataclass(frozen=True, slots=True)
class StateDecl:
    names: tuple[Ident, ...]
    span: Span
    # `state x, y: m`: the size each state is declared with (None: dim), one per name.
    sizes: tuple[Ident | None, ...] = ()


@dataclass(frozen=True, slots=True)
class InitAssign:
    target: Ident
    value: Expr
    span: Span


@dataclass(frozen=True, slots=True)
class InitDecl:
    assigns: tuple[InitAssign, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Interval:
    lo: Expr
    hi: Expr
    lo_closed: bool
    hi_closed: bool
    span: Span


@dataclass(frozen=True, slots=True)
class ParamFlag:
    """A word option of a param: `learnable`, `per_layer`, `per_channel` or `positive`."""

    word: str
    span: Span


ParamOption = ParamFlag | Interval


@dataclass(frozen=True, slots=True)
class ParamDecl:
    """`param name = value option*`; the options are kept as written, repeats included,
    so that `resolve.py` can point at a repeated or conflicting one. `index` is the
    `[0]` or `[k+1]` of one equation of a recursive schedule (`param tk[k+1] = ...`)."""

    name: Ident
    value: Expr
    options: tuple[ParamOption, ...]
    span: Span
    index: Expr | None = None

    def _has(self, word: str) -> bool:
        return any(isinstance(o, ParamFlag) and o.word == word for o in self.options)

    @property
    def learnable(self) -> bool:
        return self._has("learnable")

    @property
    def per_layer(self) -> bool:
        return self._has("per_layer")

    @property
    def per_channel(self) -> bool:
        return self._has("per_channel")

    @property
    def positive(self) -> bool:
        return self._has("positive")

    @property
    def interval(self) -> Interval | None:
        """The first interval (`resolve.py` rejects a second one)."""
        return next((o for o in self.options if isinstance(o, Interval)), None)


@dataclass(frozen=True, slots=True)
class StringLit:
    value: str
    span: Span


@dataclass(frozen=True, slots=True)
class BlockArg:
    key: Ident | None  # None for a positional (string) argument
    value: Expr | StringLit
    span: Span


@dataclass(frozen=True, slots=True)
class BlockDecl:
    name: Ident
    kind: Ident
    args: tuple[BlockArg, ...]
    shared: bool
    span: Span


@dataclass(frozen=True, slots=True)
class LayersDecl:
    depth: int | None  # None for `layers equilibrium`
    equilibrium: bool
    span: Span


@dataclass(frozen=True, slots=True)
class Statement:
    target: Name | NextName | Indexed
    value: Expr
    span: Span
    text: str  # as written, for RULE and the docstring


@dataclass(frozen=True, slots=True)
class UpdateDecl:
    statements: tuple[Statement, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class OutputDecl:
    name: Ident
    span: Span


@dataclass(frozen=True, slots=True)
class Option:
    key: Ident
    value: Expr
    span: Span


@dataclass(frozen=True, slots=True)
class SolverDecl:
    """`solver name(...)` or `backward name(...)` (`role` tells which)."""

    role: str
    name: Ident
    options: tuple[Option, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class CheckpointDecl:
    """`checkpoint N`: the layers recomputed in groups of N in backward."""

    value: Expr
    span: Span


Decl = (
    StateDecl
    | InitDecl
    | ParamDecl
    | BlockDecl
    | LayersDecl
    | UpdateDecl
    | OutputDecl
    | SolverDecl
    | CheckpointDecl
)


@dataclass(frozen=True, slots=True)
class Network:
    name: Ident
    decls: tuple[Decl, ...]
    span: Span
    text: str  # the source text of the whole network item


# ---------------------------------------------------------------- models
@dataclass(frozen=True, slots=True)
class InputDecl:
    """`input [C, H, W]`: the sizes as written (`resolve.py` wants three positive integers)."""

    sizes: tuple[Expr, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class StemDecl:
    """`stem conv(out=32, kernel=3)`: the kind is a name, checked by `resolve.py`."""

    kind: Ident
    args: tuple[Option, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class StageDecl:
    """`stage Net(dim=32, depth=3)`."""

    network: Ident
    args: tuple[Option, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class TransitionDecl:
    """`down conv(out=64) [carry states|output]`, `up conv(...)`, `norm`.

    `word` is `down`, `up` or `norm`; `kind` the name after `down` / `up` (None for `norm`).
    """

    word: Ident
    kind: Ident | None
    args: tuple[Option, ...]
    carry: Ident | None
    span: Span


@dataclass(frozen=True, slots=True)
class HeadDecl:
    """`head classifier(classes=10)` or `head none`."""

    kind: Ident
    args: tuple[Option, ...]
    span: Span


ModelDecl = InputDecl | StemDecl | StageDecl | TransitionDecl | HeadDecl


@dataclass(frozen=True, slots=True)
class Model:
    name: Ident
    decls: tuple[ModelDecl, ...]
    span: Span
    text: str  # the source text of the whole model item


@dataclass(frozen=True, slots=True)
class Module:
    networks: tuple[Network, ...]
    models: tuple[Model, ...] = ()
