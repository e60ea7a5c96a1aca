"""The values of an expression as the resolver folds it: a fixed `Scalar`, a per-sample
`DataScalar` (language.md 5.6), a `Tensor` (a linear form), and the `Scope` of the
statement that reads them."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

import sympy

from .. import ir
from ..source import Span


@dataclass(frozen=True)
class Scalar:
    expr: sympy.Expr
    span: Span


@dataclass(frozen=True)
class Tensor:
    form: ir.LinearForm
    span: Span
    # `dim`, or the size of another space (resolve/spaces.py); None: unknown (a failed block)
    space: str | None = ir.DIM_SPACE


@dataclass(frozen=True)
class DataScalar:
    """A scalar of each sample: `expr` over the symbols of its `reductions`
    (`ir.reduction_symbol`), numbers and params."""

    expr: sympy.Expr
    reductions: tuple[ir.Reduction, ...]
    span: Span


Value = Scalar | Tensor | DataScalar
ScalarLike = (Scalar, DataScalar)


@dataclass
class Scope:
    """What names mean while one update statement is resolved."""

    states: tuple[str, ...]
    params: dict[str, ir.Param]
    blocks: Collection[str]  # block names, a block whose declaration failed included
    locals_: set[str] = field(default_factory=set)
    assigned: set[str] = field(default_factory=set)  # states whose next value is defined
    rebound: set[str] = field(default_factory=set)  # states assigned as `x = ...`: `x` now means x+
    current_target: str | None = None
    in_block: str | None = None
    sum_var: str | None = None
    implicit_reasons: list[str] = field(default_factory=list)
    forward_refs: list[tuple[str, Span]] = field(
        default_factory=list
    )  # x+ read in a block before defined
    uses_input: bool = False
    # `beta = dot(g, g)/max(dot(g-, g-), 1e-12)`: a local holding a scalar, fixed or per
    # sample, is no tensor of the layer: its value is read in its place (language.md 5.6).
    scalar_locals: dict[str, Scalar | DataScalar] = field(default_factory=dict)
    data_allowed: bool = True  # dot and norm: in the update, not in an init
    data_spans: list[Span] = field(default_factory=list)  # where dot and norm are read
    # Spaces (resolve/spaces.py): the size of each state declared in another space than
    # dim, the space of each tensor local, and the blocks whose declaration succeeded.
    state_sizes: dict[str, str] = field(default_factory=dict)
    local_spaces: dict[str, str] = field(default_factory=dict)
    resolved_blocks: dict[str, ir.Block] = field(default_factory=dict)

    def space(self, state: str) -> str:
        return self.state_sizes.get(state, ir.DIM_SPACE)
