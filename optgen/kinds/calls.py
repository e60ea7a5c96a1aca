"""How a generated file builds a module: a typed call, printed by the writer.

A kind's constructor (a block, a stem, a transition, a head) returns a `Call` instead of
source text, so that the plan stays structure until the last step and one printer
(`backend/writer.call_source`) owns how a value is spelled: `MLP(dim, hidden=2 * dim,
act="relu")`, `ConvStem(in_chans, 32, kernel=3, stride=1)`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Code:
    """A value written as Python source in the constructor's own names: `dim`,
    `2 * dim`, `in_chans`, `num_classes` (never a value a user wrote as text)."""

    text: str


# A plain value is printed by repr (an int, a float, a bool, None, a string).
Value = int | float | bool | str | None | Code


@dataclass(frozen=True, slots=True)
class Call:
    """`callee(*args, **kwargs)`: a class by name, or a call giving the class
    (a custom block: `_load_class("pkg.module:Class")(dim, ...)`)."""

    callee: str | Call
    args: tuple[Value, ...] = ()
    kwargs: tuple[tuple[str, Value], ...] = ()


DIM = Code("dim")
