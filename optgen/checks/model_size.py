"""What a model would allocate, bounded before anything is: located errors for a model whose
tensors, weights, classes, widths, stages or layers are past what a module can hold.

A model of a few valid-looking numbers (`stem conv(out=1e9)`, `head classifier(classes=1e12)`,
an input of [3, 1e9, 1e9], `up conv(scale=100000)` twice) would otherwise compile into a
module whose construction asks for terabytes, or fail deep inside the code writer. The
bounds are far above any model of the literature (docs/models.md, "Limits"), and each error
points at the declaration that crosses one.
"""

from __future__ import annotations

import math

from .. import ir
from ..errors import Diagnostic, Severity
from ..kinds.parts import HEAD_KINDS, STEM_KINDS, TRANSITION_KINDS
from ..source import Span

MAX_CLASSES = 1_000_000  # outputs of a classifier head (ImageNet-21k has 21,843)
MAX_WIDTH = 65_536  # channels (or token features) of a stem, stage or transition
MAX_STAGES = 64  # stages of one model
MAX_LAYERS = 4_096  # layers of all the stages of one model together
MAX_ACTIVATION = 2**28  # elements of one sample's tensor between two parts (1 GiB float32)
MAX_WEIGHTS = 2**31  # weights of one part: a conv or the classifier's Linear (8 GiB float32)


def _error(span: Span, message: str, hint: str) -> Diagnostic:
    return Diagnostic(Severity.ERROR, span, message, hint)


def _elements(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def _shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(n) for n in shape) + "]"


def _activation_error(span: Span, what: str, shape: tuple[int, ...]) -> Diagnostic | None:
    if _elements(shape) <= MAX_ACTIVATION:
        return None
    return _error(
        span,
        f"{what} a tensor of {_shape_text(shape)} per sample ({_elements(shape):,} elements),"
        f" more than a model may hold ({MAX_ACTIVATION:,})",
        "use a smaller input, fewer channels, or a larger stride",
    )


def _width_error(span: Span, what: str, width: int) -> Diagnostic | None:
    if width <= MAX_WIDTH:
        return None
    return _error(
        span, f"{what} has {width:,} channels, more than {MAX_WIDTH:,}", "use fewer channels"
    )


def _weights_error(span: Span, what: str, weights: int) -> Diagnostic | None:
    if weights <= MAX_WEIGHTS:
        return None
    return _error(
        span,
        f"{what} would hold {weights:,} weights, more than {MAX_WEIGHTS:,}",
        "use fewer channels or classes",
    )


def _attention_error(span: Span, stage: ir.Stage, tokens: int) -> Diagnostic | None:
    if tokens * tokens <= MAX_ACTIVATION:
        return None
    return _error(
        span,
        f"stage {stage.network} attends over {tokens:,} tokens: its attention scores hold"
        f" {tokens * tokens:,} elements per sample and head, more than {MAX_ACTIVATION:,}",
        "use a larger patch size in the tokens stem, or a smaller input",
    )


def _stem_errors(model: ir.Model) -> list[Diagnostic | None]:
    stem = model.stem
    weights = STEM_KINDS[stem.kind].weights
    what = f"stem {stem.kind}"
    return [
        _activation_error(model.span, f"the input of model {model.name} is", model.input),
        _width_error(stem.span, what, stem.out),
        weights and _weights_error(stem.span, what, weights(dict(stem.args), model.input[0])),
    ]


def _stage_errors(model: ir.Model, networks: dict[str, ir.Network]) -> list[Diagnostic | None]:
    found: list[Diagnostic | None] = []
    layers = 0
    for i, (stage, shape) in enumerate(zip(model.stages, model.shapes)):
        if i == MAX_STAGES:
            found.append(
                _error(
                    stage.span,
                    f"model {model.name} has more than {MAX_STAGES} stages",
                    "use fewer stages, each with more layers",
                )
            )
        layers += stage.depth
        if layers > MAX_LAYERS and layers - stage.depth <= MAX_LAYERS:
            found.append(
                _error(
                    stage.span,
                    f"model {model.name} has {layers:,} layers by this stage, more than"
                    f" {MAX_LAYERS:,} in all",
                    "use fewer layers",
                )
            )
        giver = model.stem.span if i == 0 else model.transitions[i - 1].span
        found.append(_width_error(stage.span, f"stage {stage.network}", stage.dim))
        found.append(_activation_error(giver, f"stage {stage.network} is given", shape))
        if model.layout == "sequence" and any(
            b.kind == "transformer" for b in networks[stage.network].blocks
        ):
            found.append(_attention_error(giver, stage, shape[0]))
    return found


def _transition_errors(model: ir.Model) -> list[Diagnostic | None]:
    found: list[Diagnostic | None] = []
    for stage, transition in zip(model.stages, model.transitions):
        weights = TRANSITION_KINDS[transition.kind].weights
        if weights is None:  # identity, norm: the width of the stage before it
            continue
        what = transition.kind
        found.append(_width_error(transition.span, what, transition.out))
        found.append(
            _weights_error(transition.span, what, weights(dict(transition.args), stage.dim))
        )
    return found


def _head_errors(model: ir.Model) -> list[Diagnostic | None]:
    classes = model.head.classes
    if classes is None:
        return []
    if classes > MAX_CLASSES:
        return [
            _error(
                model.head.span,
                f"head classifier has {classes:,} classes, more than {MAX_CLASSES:,}",
                "a classifier of that many outputs cannot be built",
            )
        ]
    features = model.output_shape[0] if model.layout == "image" else model.output_shape[-1]
    weights = HEAD_KINDS[model.head.kind].weights
    if weights is None:
        return []
    head = model.head
    return [_weights_error(head.span, f"head {head.kind}", weights(dict(head.args), features))]


def model_size_errors(models, networks: dict[str, ir.Network]) -> list[Diagnostic]:
    """Every bound a model crosses, located, in declaration order within each model."""
    found: list[Diagnostic] = []
    for model in models:
        checks = [
            *_stem_errors(model),
            *_stage_errors(model, networks),
            *_transition_errors(model),
            *_head_errors(model),
        ]
        found.extend(
            sorted((d for d in checks if d is not None), key=lambda d: (d.span.line, d.span.col))
        )
    return found
