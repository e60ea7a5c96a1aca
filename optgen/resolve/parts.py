"""The parts of a model (docs/language.md, "Models"): the input, the stems, the heads and
the arguments of stages and transitions, each checked against its table; and the spatial
size that a stem or a transition gives the stage after it."""

from __future__ import annotations

import difflib

from .. import ir
from ..kinds.parts import HEAD_KINDS, STEM_KINDS, TRANSITION_KINDS, PartKind, transition_name
from ..source import Span
from ..syntax import ast
from .context import Context, Job, _did_you_mean
from .scalars import ScalarResolver

# The arguments of a stage; those of the stems, transitions and heads are in their registry.
_STAGE_ARGS: dict[str, int | None] = {"dim": None, "depth": None}
_CARRIES = ("states", "output")


class PartResolver(Job):
    """The parts of a model and the shapes they give."""

    def __init__(self, ctx: Context, scalars: ScalarResolver):
        super().__init__(ctx)
        self.scalars = scalars

    def model_args(
        self, args: tuple[ast.Option, ...], spec: dict[str, int | None], what: str, at: Span
    ) -> tuple[dict[str, int], dict[str, Span]]:
        """The arguments of a stem, stage, transition or head: positive integers, every
        unknown, repeated or bad one reported, defaults filled in; and the span of each."""
        values: dict[str, int] = {}
        spans: dict[str, Span] = {}
        given: set[str] = set()
        ok, misspelled = True, False
        for a in args:
            key = a.key.id
            if key in given:
                self.report.error(a.key.span, f"argument '{key}' is given twice")
                ok = False
                continue
            given.add(key)
            if key not in spec:
                self.report.error(
                    a.key.span,
                    f"{what} has no argument '{key}'",
                    _did_you_mean(key, spec)
                    or (
                        f"its arguments: {', '.join(spec)}"
                        if spec
                        else f"{what} takes no arguments"
                    ),
                )
                ok, misspelled = False, True
                continue
            value = self.attempt(
                self.positive_int, a.value, f"{key} of {what}", f"the argument {key}"
            )
            if value is None:
                ok = False
                continue
            values[key], spans[key] = value, a.value.span
        for key, default in spec.items():
            if key in given:
                continue
            if default is not None:
                values[key], spans[key] = default, at
                continue
            ok = False
            if not misspelled:  # a misspelled key is likely the missing one: said once
                self.report.error(
                    at,
                    f"{what} needs the argument {key}",
                    f"write {key}=... between its parentheses",
                )
        if not ok:
            self.report.abandon()
        return values, spans

    def positive_int(self, node, what: str, context: str) -> int:
        value = self.scalars.scalar(node, {}, context)
        if not (value.is_integer and value > 0):
            self.fail(node.span, f"{what} must be a positive integer, got {self.text(node)}")
        return int(value)

    def odd_args(self, kind: PartKind, args: dict[str, int], spans, what: str) -> None:
        for key in kind.odd:
            if args[key] % 2 == 0:
                self.fail(
                    spans[key],
                    f"{key} of {what} must be odd, got {args[key]}",
                    f"'same' padding keeps the size only for odd kernels: use {args[key] + 1}",
                )

    def model_input(self, d: ast.InputDecl) -> tuple[int, int, int]:
        if len(d.sizes) != 3:
            self.fail(
                d.span,
                f"input takes three sizes [channels, height, width], got {len(d.sizes)}",
                "write input [3, 32, 32]",
            )
        sizes = [
            self.attempt(self.positive_int, node, f"{label} of the input", "an input size")
            for node, label in zip(d.sizes, ("channels", "height", "width"))
        ]
        if None in sizes:
            self.report.abandon()
        return tuple(sizes)

    def model_stem(self, d: ast.StemDecl) -> ir.Stem:
        name = d.kind.id
        if name not in STEM_KINDS:
            self.fail(
                d.kind.span,
                f"unknown stem '{name}'",
                _did_you_mean(name, STEM_KINDS) or f"known: {', '.join(STEM_KINDS)}",
            )
        kind = STEM_KINDS[name]
        args, spans = self.model_args(d.args, kind.args, f"stem {name}", d.kind.span)
        self.odd_args(kind, args, spans, f"stem {name}")
        return ir.Stem(name, tuple((key, args[key]) for key in kind.args), d.span)

    def model_head(self, d: ast.HeadDecl) -> ir.Head:
        name = d.kind.id
        if name not in HEAD_KINDS:
            self.fail(
                d.kind.span,
                f"unknown head '{name}'",
                _did_you_mean(name, HEAD_KINDS) or f"known: {', '.join(HEAD_KINDS)}",
            )
        kind = HEAD_KINDS[name]
        args, spans = self.model_args(d.args, kind.args, f"head {name}", d.kind.span)
        self.odd_args(kind, args, spans, f"head {name}")
        return ir.Head(name, tuple((key, args[key]) for key in kind.args), d.span)

    def model_transition_args(self, d: ast.TransitionDecl) -> dict[str, int]:
        word = d.word.id
        if d.carry is not None and d.carry.id not in _CARRIES:
            self.report.error(
                d.carry.span,
                f"unknown carry '{d.carry.id}'",
                _did_you_mean(d.carry.id, _CARRIES) or "write carry states or carry output",
            )
        if d.kind is None:  # norm
            if d.carry is not None and d.carry.id not in _CARRIES:
                self.report.abandon()
            return {}
        name = transition_name(word, d.kind.id)
        kind = TRANSITION_KINDS.get(name)
        if kind is None or not kind.written:
            prefix = f"{word} "
            same_word = sorted(k[len(prefix) :] for k in TRANSITION_KINDS if k.startswith(prefix))
            match = difflib.get_close_matches(d.kind.id, same_word, n=1, cutoff=0.6)
            known = [k for k, part in TRANSITION_KINDS.items() if part.written]
            self.fail(
                d.kind.span,
                f"unknown transition '{name}'",
                f"did you mean '{word} {match[0]}'?" if match else f"known: {', '.join(known)}",
            )
        args, spans = self.model_args(d.args, kind.args, name, d.kind.span)
        self.odd_args(kind, args, spans, name)
        if d.carry is not None and d.carry.id not in _CARRIES:
            self.report.abandon()
        return args

    def divides(self, step: int, span: Span, what: str, height: int, width: int) -> None:
        bad = [(label, n) for label, n in (("height", height), ("width", width)) if n % step]
        if not bad:
            return
        if len(bad) == 2 and height == width:
            shown = f"height and width {height}"
        else:
            shown = " and ".join(f"{label} {n}" for label, n in bad)
        self.fail(
            span,
            f"{what} does not divide its input's {shown}",
            "use one that divides " + (f"{height}" if height == width else f"{height} and {width}"),
        )

    def stem_shape(
        self, stem: ir.Stem, size: tuple[int, int, int], d: ast.StemDecl
    ) -> tuple[int, ...]:
        """The spatial size the stem gives the first stage: (H, W), or (L,) for tokens."""
        _, height, width = size
        return self.part_shape(STEM_KINDS[stem.kind], dict(stem.args), d, (height, width))

    def transition_shape(
        self,
        transition: ir.Transition,
        written: tuple[ast.TransitionDecl, dict | None] | None,
        spatial: tuple[int, ...],
    ) -> tuple[int, ...]:
        """The spatial size after a transition."""
        kind = TRANSITION_KINDS[transition.kind]
        if kind.layout_in is None:
            return kind.shape(dict(transition.args), spatial)
        if len(spatial) != 2:
            self.report.abandon()  # a down or up transition on tokens: reported already
        return self.part_shape(kind, dict(transition.args), written[0], spatial)

    def part_shape(
        self, kind: PartKind, args: dict[str, int], d, spatial: tuple[int, int]
    ) -> tuple[int, ...]:
        """The spatial size a stem or transition gives, after checking that the arguments
        its registry entry names divide its input's height and width."""
        what = f"stem {kind.name}" if kind.role == "stem" else kind.name
        for key in kind.divides:
            span = _arg_span(d, key) or d.kind.span
            self.divides(args[key], span, f"{key}={args[key]} of {what}", *spatial)
        return kind.shape(args, spatial)


def _arg_span(d, key: str) -> Span | None:
    return next((a.value.span for a in d.args if a.key.id == key), None)
