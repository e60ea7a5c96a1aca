"""The parts of a model (docs/language.md, "Models"): the input, the stems, the heads and
the arguments of stages and transitions, each checked against its table; and the spatial
size that a stem or a transition gives the stage after it."""

from __future__ import annotations

import difflib

from .. import ir
from ..source import Span
from ..syntax import ast
from .context import Context, Job, _did_you_mean
from .scalars import ScalarResolver

# The arguments of each stem, stage, transition and head; None marks a required one.
_STEM_ARGS: dict[str, dict[str, int | None]] = {
    "conv": {"out": None, "kernel": 3, "stride": 1},
    "patch": {"out": None, "size": None},
    "tokens": {"out": None, "size": None},
}
_STAGE_ARGS: dict[str, int | None] = {"dim": None, "depth": None}
_TRANSITION_ARGS: dict[str, dict[str, dict[str, int | None]]] = {
    "down": {
        "conv": {"out": None, "stride": 2, "kernel": 3},
        "pool": {"out": None, "stride": 2},
    },
    "up": {"conv": {"out": None, "scale": 2, "kernel": 3}},
}
_HEAD_ARGS: dict[str, dict[str, int | None]] = {"classifier": {"classes": None}, "none": {}}
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

    def odd_kernel(self, kernel: int, span: Span, what: str) -> None:
        if kernel % 2 == 0:
            self.fail(
                span,
                f"kernel of {what} must be odd, got {kernel}",
                f"'same' padding keeps the size only for odd kernels: use {kernel + 1}",
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
        kind = d.kind.id
        if kind not in _STEM_ARGS:
            self.fail(
                d.kind.span,
                f"unknown stem '{kind}'",
                _did_you_mean(kind, _STEM_ARGS) or f"known: {', '.join(_STEM_ARGS)}",
            )
        args, spans = self.model_args(d.args, _STEM_ARGS[kind], f"stem {kind}", d.kind.span)
        if kind == "conv":
            self.odd_kernel(args["kernel"], spans["kernel"], "stem conv")
            return ir.Stem(ir.StemKind.CONV, args["out"], args["kernel"], args["stride"], d.span)
        return ir.Stem(ir.StemKind(kind), args["out"], args["size"], args["size"], d.span)

    def model_head(self, d: ast.HeadDecl) -> ir.Head:
        kind = d.kind.id
        if kind not in _HEAD_ARGS:
            self.fail(
                d.kind.span,
                f"unknown head '{kind}'",
                _did_you_mean(kind, _HEAD_ARGS) or f"known: {', '.join(_HEAD_ARGS)}",
            )
        args, _ = self.model_args(d.args, _HEAD_ARGS[kind], f"head {kind}", d.kind.span)
        return ir.Head(args.get("classes"), d.span)

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
        kind = d.kind.id
        if kind not in _TRANSITION_ARGS[word]:
            match = difflib.get_close_matches(kind, sorted(_TRANSITION_ARGS[word]), n=1, cutoff=0.6)
            known = [f"{w} {k}" for w, kinds in _TRANSITION_ARGS.items() for k in kinds]
            self.fail(
                d.kind.span,
                f"unknown transition '{word} {kind}'",
                (
                    f"did you mean '{word} {match[0]}'?"
                    if match
                    else f"known: {', '.join(known)}, norm"
                ),
            )
        args, _ = self.model_args(
            d.args, _TRANSITION_ARGS[word][kind], f"{word} {kind}", d.kind.span
        )
        if "kernel" in args:
            span = _arg_span(d, "kernel") or d.kind.span
            self.odd_kernel(args["kernel"], span, f"{word} {kind}")
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
        key = "stride" if stem.kind is ir.StemKind.CONV else "size"
        step = stem.stride
        span = _arg_span(d, key) or d.kind.span
        self.divides(step, span, f"{key}={step} of stem {stem.kind}", height, width)
        if stem.kind is ir.StemKind.CONV:
            return (-(-height // step), -(-width // step))
        if stem.kind is ir.StemKind.PATCH:
            return (height // step, width // step)
        return ((height // step) * (width // step),)

    def transition_shape(
        self,
        transition: ir.Transition,
        written: tuple[ast.TransitionDecl, dict | None] | None,
        spatial: tuple[int, ...],
    ) -> tuple[int, ...]:
        """The spatial size after a transition."""
        kind = transition.kind
        if kind in (ir.TransitionKind.IDENTITY, ir.TransitionKind.NORM):
            return spatial
        if len(spatial) != 2:
            self.report.abandon()  # a down or up transition on tokens: reported already
        height, width = spatial
        if kind is ir.TransitionKind.UP_CONV:
            return (height * transition.scale, width * transition.scale)
        d = written[0]
        step = transition.stride
        span = _arg_span(d, "stride") or d.kind.span
        self.divides(step, span, f"stride={step} of {kind}", height, width)
        if kind is ir.TransitionKind.DOWN_CONV:
            return (-(-height // step), -(-width // step))
        return (height // step, width // step)


def _arg_span(d, key: str) -> Span | None:
    return next((a.value.span for a in d.args if a.key.id == key), None)
