"""The typed IR of models (language.md section 9): a stem, stages that run networks of
the same file, the transitions between them and a head. `optgen.ir` re-exports them
beside the networks' IR (`ir.Model`, `ir.Carry`, ...)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .source import Span


class Carry(str, Enum):
    """What a transition hands to the next stage."""

    STATES = "states"  # every live slot (x, x-, y, x[0], sums) through the transition
    OUTPUT = "output"  # the output state only; the next stage starts from its init

    __hash__ = str.__hash__

    def __str__(self) -> str:
        return self.value


Args = tuple[tuple[str, int], ...]  # a part's resolved arguments, in its registry order


def _arg(args: Args, name: str, default: int | None = None) -> int | None:
    return next((value for key, value in args if key == name), default)


@dataclass(frozen=True, slots=True)
class Stem:
    kind: str  # a key of optgen.kinds.parts.STEM_KINDS: "conv", "patch", "tokens"
    args: Args  # every argument of the kind, defaults filled in
    span: Span

    def arg(self, name: str, default: int | None = None) -> int | None:
        return _arg(self.args, name, default)

    @property
    def out(self) -> int:
        return self.arg("out")


@dataclass(frozen=True, slots=True)
class Stage:
    network: str  # a network of the same file
    dim: int
    depth: int
    span: Span


@dataclass(frozen=True, slots=True)
class Transition:
    kind: str  # a key of optgen.kinds.parts.TRANSITION_KINDS: "down conv", "norm", ...
    out: int  # channels after the transition
    carry: Carry
    span: Span
    args: Args = ()  # every argument of the kind, defaults filled in

    def arg(self, name: str, default: int | None = None) -> int | None:
        return _arg(self.args, name, default)


@dataclass(frozen=True, slots=True)
class Head:
    kind: str  # a key of optgen.kinds.parts.HEAD_KINDS: "classifier", "none"
    args: Args
    span: Span

    def arg(self, name: str, default: int | None = None) -> int | None:
        return _arg(self.args, name, default)

    @property
    def classes(self) -> int | None:
        """None: the head has no classes (`head none`: the model returns features)."""
        return self.arg("classes")


@dataclass(frozen=True, slots=True)
class Model:
    """`model Name { input [C, H, W]; stem ...; stage NET(dim=, depth=); down ...; head ... }`.

    `transitions[i]` sits between `stages[i]` and `stages[i + 1]` ("identity" when the file
    writes two stages one after the other), so `len(transitions) == len(stages) - 1`.
    `shapes[i]` is the input shape of stage i without the batch dimension
    (`(C, H, W)` or `(L, C)`), and `output_shape` what the stages hand the head.
    """

    name: str
    input: tuple[int, int, int]  # channels, height, width
    stem: Stem
    stages: tuple[Stage, ...]
    transitions: tuple[Transition, ...]
    head: Head
    layout: str  # the stages' layout: "image" or "sequence"
    shapes: tuple[tuple[int, ...], ...]
    output_shape: tuple[int, ...]
    span: Span
