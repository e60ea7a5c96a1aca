"""`optgen match FILE --model NAME --to BASELINE`: the widths that give a model the FLOPs (or
the parameters) of a baseline, as the paper compares its networks.

A model's widths are its stem's `out`, each stage's `dim` and each transition's `out`; they
chain, so they form groups (the stem and the stages up to the first transition that
changes the width, then each such transition and the stages after it), and one width per
group is free. The search measures real candidates, each compiled as the user's file would
be (`FLOPS` and `PARAMS` on the meta device, costs.py):

1. every width scaled by one factor s, found by secant steps on the figure, which grows
   about as s squared;
2. then one group at a time moved by 1 or 2 channels while that brings the figure closer.

A candidate the compiler refuses (a width that heads or groups must divide) is skipped.
The result is the model item with its width literals replaced, nothing else changed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import Enum

from .. import pipeline
from ..ir import Model
from ..output import UsageError
from ..pipeline import Stage
from ..source import SourceFile, Span

# The most candidates one match compiles (each about half a second of CPU).
MAX_CANDIDATES = 60


class Figure(Enum):
    FLOPS = "flops"
    PARAMS = "params"


@dataclass(frozen=True)
class Slot:
    """One width literal of the model item: its offsets in the file's text, its group."""

    start: int
    end: int
    group: int


@dataclass(frozen=True)
class Match:
    model: str
    baseline: str
    figure: Figure
    target: int
    reached: int
    widths: tuple[int, ...]
    original: tuple[int, ...]
    text: str  # the whole file, the model item's widths replaced
    item: str  # the model item alone, as rewritten
    candidates: int

    @property
    def error(self) -> float:
        return self.reached / self.target - 1


def _offset(lines: list[str], line: int, col: int) -> int:
    return sum(len(text) + 1 for text in lines[: line - 1]) + col - 1


def _literal(text: str, lines: list[str], span: Span, name: str) -> tuple[int, int] | None:
    """The offsets of the integer after `name=` inside `span`, or None."""
    start, end = _offset(lines, span.line, span.col), _offset(lines, span.end_line, span.end_col)
    found = re.search(rf"\b{name}\s*=\s*(\d+)\b", text[start:end])
    if found is None:
        return None
    return start + found.start(1), start + found.end(1)


def width_slots(source: SourceFile, model: Model) -> list[Slot]:
    """Every width literal of `model`, grouped by the width it sets."""
    text, lines = source.text, source.text.split("\n")
    slots: list[Slot] = []

    def add(span: Span, name: str, group: int, what: str, required: bool = True) -> bool:
        found = _literal(text, lines, span, name)
        if found is None:
            if required:
                raise UsageError(
                    f"{source.path}:{span.line}:{span.col}: {what} of model {model.name} has"
                    f" no {name}=N to change: write its width as a number"
                )
            return False
        slots.append(Slot(found[0], found[1], group))
        return True

    group = 0
    add(model.stem.span, "out", group, "the stem")
    for i, stage in enumerate(model.stages):
        if i > 0:
            transition = model.transitions[i - 1]
            changes = transition.out != model.stages[i - 1].dim
            group += changes
            # An `out=` equal to the width before (or none, as `norm`) stays in its group.
            add(transition.span, "out", group, f"transition {i - 1}", required=changes)
        add(stage.span, "dim", group, f"stage {i}")
    return slots


def rewritten(text: str, slots: list[Slot], widths: tuple[int, ...]) -> str:
    out, last = [], 0
    for slot in sorted(slots, key=lambda s: s.start):
        out.append(text[last : slot.start])
        out.append(str(widths[slot.group]))
        last = slot.end
    out.append(text[last:])
    return "".join(out)


class _Search:
    """Candidates compiled and measured, remembered by their widths."""

    def __init__(self, source: SourceFile, model: Model, slots: list[Slot], figure: Figure):
        self.source, self.model, self.slots, self.figure = source, model, slots, figure
        self.seen: dict[tuple[int, ...], int | None] = {}
        self.alone = source.text

    def keep_only(self, spans: list[Span]) -> None:
        """Compile the candidates with every other item blanked out (spaces: the same
        offsets and lines), so that each costs the model and its networks alone."""
        lines = self.source.text.split("\n")
        chars = list(self.source.text)
        for span in spans:
            start = _offset(lines, span.line, span.col)
            end = _offset(lines, span.end_line, span.end_col)
            for i in range(start, end):
                if chars[i] != "\n":
                    chars[i] = " "
        self.alone = "".join(chars)

    def value(self, widths: tuple[int, ...]) -> int | None:
        if widths in self.seen:
            return self.seen[widths]
        if len(self.seen) >= MAX_CANDIDATES or min(widths) < 1:
            return None
        text = rewritten(self.alone, self.slots, widths)
        result = pipeline.compile(SourceFile(self.source.path, text), until=Stage.EMIT)
        value = None
        if result.ok:
            names = [m.name for m in result.models]
            flops, params = result.model_figures[names.index(self.model.name)]
            value = flops if self.figure is Figure.FLOPS else params
        self.seen[widths] = value
        return value


def _scaled(widths: tuple[int, ...], factor: float) -> tuple[int, ...]:
    return tuple(max(1, round(w * factor)) for w in widths)


def match(
    source: SourceFile, model_name: str, baseline: str, figure: Figure, within: float
) -> Match:
    """The widths of `model_name` whose figure is nearest the baseline's (UsageError when
    the nearest found is further than `within`, a fraction)."""
    result = pipeline.compile(source, until=Stage.EMIT)
    result.raise_for_errors()  # located, as optgen check prints them
    models = {m.name: (m, fig) for m, fig in zip(result.models, result.model_figures)}
    for name in (model_name, baseline):
        if name not in models:
            have = ", ".join(models) or "none"
            raise UsageError(f"{source.path} has no model {name!r}; its models: {have}")
    model, figures = models[model_name]
    index = 0 if figure is Figure.FLOPS else 1
    target = models[baseline][1][index]
    if target is None or figures[index] is None:
        raise UsageError(f"the {figure.value} of {model_name} or {baseline} could not be measured")
    slots = width_slots(source, model)
    first: dict[int, int] = {}
    for slot in sorted(slots, key=lambda s: s.start):
        first.setdefault(slot.group, int(source.text[slot.start : slot.end]))
    original = tuple(first[g] for g in range(len(first)))
    search = _Search(source, model, slots, figure)
    used = {stage.network for stage in model.stages}
    search.keep_only(
        [m.span for m in result.models if m.name != model_name]
        + [n.span for n in result.networks if n.name not in used]
    )
    search.seen[original] = figures[index]
    best = _nearest_by_scale(search, original, target)
    best = _refined(search, best, target)
    reached = search.value(best)
    found = Match(
        model_name,
        baseline,
        figure,
        target,
        reached,
        best,
        original,
        rewritten(source.text, slots, best),
        _item(source, model, slots, best),
        len(search.seen),
    )
    if abs(found.error) > within:
        raise UsageError(
            f"no widths of {model_name} found within {within:.1%} of {baseline}'s"
            f" {figure.value} ({target:,}): the nearest, {widths_text(best)}, gives {reached:,}"
            f" ({found.error:+.1%}) after {found.candidates} candidates"
        )
    return found


def _distance(value: int | None, target: int) -> float:
    return math.inf if value is None else abs(value / target - 1)


def _nearest_by_scale(search: _Search, widths: tuple[int, ...], target: int) -> tuple[int, ...]:
    """Secant steps on log(figure) against log(scale): the figure grows about as s^2."""
    best = widths
    factor, value = 1.0, search.value(widths)
    slope = 2.0
    for _ in range(6):
        if value == target:
            break
        step = math.log(target / value) / slope
        new_factor = factor * math.exp(step)
        candidate = _scaled(widths, new_factor)
        new_value = search.value(candidate)
        if new_value is None:
            break
        if _distance(new_value, target) < _distance(search.value(best), target):
            best = candidate
        if new_value != value and new_factor != factor:
            measured = math.log(new_value / value) / math.log(new_factor / factor)
            slope = measured if 0.5 <= measured <= 4 else slope
        factor, value = new_factor, new_value
    return best


def _refined(search: _Search, best: tuple[int, ...], target: int) -> tuple[int, ...]:
    """One group at a time, moved by 1 or 2 channels, while that comes closer."""
    while True:
        current = _distance(search.value(best), target)
        neighbours = [
            best[:g] + (best[g] + step,) + best[g + 1 :]
            for g in range(len(best))
            for step in (-2, -1, 1, 2)
        ]
        scored = [(_distance(search.value(n), target), n) for n in neighbours]
        distance, nearest = min(scored, key=lambda pair: pair[0])
        if distance >= current:
            return best
        best = nearest


def within_fraction(text: str) -> float:
    """`--within`: `2%`, `2` (percent) or `0.5%`, as a fraction."""
    number = text[:-1] if text.endswith("%") else text
    try:
        value = float(number) / 100
    except ValueError:
        raise UsageError(f"--within takes a percentage such as 2%, got {text!r}") from None
    if not 0 < value < 1:
        raise UsageError(f"--within takes a percentage above 0 and below 100, got {text!r}")
    return value


def widths_text(widths: tuple[int, ...]) -> str:
    return ", ".join(str(w) for w in widths)


def _item(source: SourceFile, model: Model, slots: list[Slot], widths: tuple[int, ...]) -> str:
    """The model item's text, its widths replaced."""
    lines = source.text.split("\n")
    start = _offset(lines, model.span.line, 1)
    end = _offset(lines, model.span.end_line, model.span.end_col)
    inside = [
        Slot(s.start - start, s.end - start, s.group) for s in slots if start <= s.start < end
    ]
    return rewritten(source.text[start:end], inside, widths)
