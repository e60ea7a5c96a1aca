"""The registry of model parts: the stems, transitions and heads of a model.

Each entry holds every fact the pipeline needs about its kind, so that adding a stem,
a transition or a head touches this file alone (or, for a kind of one's own, an entry
inserted into `STEM_KINDS`, `TRANSITION_KINDS` or `HEAD_KINDS`): the name as written,
its arguments and their defaults, which must be odd and which must divide the input's
height and width, the layout it takes and gives, the spatial size it gives, how the
generated file constructs it, the source it copies into that file
(`templates/models/<file>`, or inline text), the weights it holds (checked against the
bounds of `checks/model_size.py`) and, for a transition, how it carries the states.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum

from ..resources import resource_path
from .blocks import Layout
from .calls import Call, Code, Value


class Role(str, Enum):
    """Where a part sits in a model."""

    STEM = "stem"
    TRANSITION = "transition"
    HEAD = "head"

    __hash__ = str.__hash__

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class PartContext:
    """What a part's constructor may read besides its arguments.

    `in_chans` and `num_classes` are the names of the model's constructor arguments;
    `dim` the width that flows into the part (a transition: the stage before it; a head:
    the last stage's); `input` the declared input [C, H, W]; `tokens` whether the stages
    take the token layout [N, L, C].
    """

    input: tuple[int, int, int]
    dim: int | None = None
    tokens: bool = False
    in_chans: str = "in_chans"
    num_classes: str = "num_classes"


Shape = tuple[int, ...]
Constructor = Callable[[Mapping[str, int], PartContext], Call]


def _same(args: Mapping[str, int], spatial: Shape) -> Shape:
    return spatial


def _ceil_divided(key: str) -> Callable[[Mapping[str, int], Shape], Shape]:
    def shape(args: Mapping[str, int], spatial: Shape) -> Shape:
        return tuple(-(-n // args[key]) for n in spatial)

    return shape


def _divided(key: str) -> Callable[[Mapping[str, int], Shape], Shape]:
    def shape(args: Mapping[str, int], spatial: Shape) -> Shape:
        return tuple(n // args[key] for n in spatial)

    return shape


def _times(key: str) -> Callable[[Mapping[str, int], Shape], Shape]:
    def shape(args: Mapping[str, int], spatial: Shape) -> Shape:
        return tuple(n * args[key] for n in spatial)

    return shape


def _tokens_shape(args: Mapping[str, int], spatial: Shape) -> Shape:
    height, width = spatial
    return ((height // args["size"]) * (width // args["size"]),)


def _conv_weights(key: str | None) -> Callable[[Mapping[str, int], int], int]:
    """A convolution's weights: channels in x out x kernel x kernel (1 for None)."""

    def weights(args: Mapping[str, int], channels: int) -> int:
        kernel = args[key] if key is not None else 1
        return channels * args["out"] * kernel * kernel

    return weights


@dataclass(frozen=True, slots=True)
class PartKind:
    """Everything the pipeline knows of one stem, transition or head kind."""

    role: Role
    name: str  # as written: "conv", "down conv", "classifier"
    class_name: str  # the class the generated file builds ("" for none: identity)
    template: str  # the file under templates/models/ holding it ("" with `source` or none)
    # Its arguments in order, each with its default; None marks a required one.
    args: dict[str, int | None]
    # How the generated file builds it, from the resolved arguments and the context.
    constructor: Constructor
    odd: tuple[str, ...] = ()  # kernel sizes: odd, so that "same" padding keeps the size
    divides: tuple[str, ...] = ()  # must divide the height and width of its input
    # The layout it takes (None: any) and the one it gives (None: the one it takes).
    layout_in: Layout | None = Layout.IMAGE
    layout_out: Layout | None = None
    # The spatial size it gives, from its input's: (H, W) -> (H', W') or (L,).
    shape: Callable[[Mapping[str, int], Shape], Shape] = _same
    # The weights it holds given the channels (or features) flowing in; None: not checked.
    weights: Callable[[Mapping[str, int], int], int] | None = None
    # A transition: whether the forward pass runs it at all (not an identity), and
    # whether, carrying the states, it maps every slot in one batch (one BatchNorm
    # statistic for all, so that x - x- keeps its meaning) or each slot on its own.
    runs: bool = True
    batched_slots: bool = True
    written: bool = True  # whether a file writes it (an identity is two stages in a row)
    source: str | None = None  # inline source instead of templates/models/<template>
    doc: str = ""

    def source_text(self) -> str:
        """The whole source it copies: inline, or its template file."""
        if self.source is not None:
            return self.source.strip()
        return resource_path("templates/models", self.template).read_text("utf-8").strip()


def _building(class_name: str, *first: str, inputs: str = "in_chans", **derived) -> Constructor:
    """The constructor `class_name(<inputs>, <first args>..., <other args>=..., **derived)`:
    the part's first argument is the channels flowing in (the model's `in_chans` for a
    stem, `dim` for the others), then the arguments named in `first` positionally and
    the rest by keyword, in the registry's order; `derived` adds keywords computed from
    the arguments and the context."""

    def constructor(args: Mapping[str, int], ctx: PartContext) -> Call:
        channels: Value = Code(ctx.in_chans) if inputs == "in_chans" else ctx.dim
        rest = tuple((k, v) for k, v in args.items() if k not in first)
        extra = tuple((k, f(args, ctx)) for k, f in derived.items())
        return Call(class_name, (channels, *(args[k] for k in first)), rest + extra)

    return constructor


def _token_count(args: Mapping[str, int], ctx: PartContext) -> int:
    (tokens,) = _tokens_shape(args, ctx.input[1:])
    return tokens


def _tokens(args: Mapping[str, int], ctx: PartContext) -> bool:
    return ctx.tokens


def _classifier_head(args: Mapping[str, int], ctx: PartContext) -> Call:
    # The classes come from the model's `num_classes` (timm's reset_classifier changes
    # them), not from the declared `classes`, its default.
    return Call("ClassifierHead", (ctx.dim, Code(ctx.num_classes)), (("tokens", ctx.tokens),))


STEM_KINDS: dict[str, PartKind] = {
    "conv": PartKind(
        Role.STEM,
        "conv",
        "ConvStem",
        "stems.py",
        {"out": None, "kernel": 3, "stride": 1},
        _building("ConvStem", "out"),
        odd=("kernel",),
        divides=("stride",),
        shape=_ceil_divided("stride"),
        weights=_conv_weights("kernel"),
        doc="Conv-BN-ReLU: [N, out, H/stride, W/stride]",
    ),
    "patch": PartKind(
        Role.STEM,
        "patch",
        "PatchStem",
        "stems.py",
        {"out": None, "size": None},
        _building("PatchStem", "out"),
        divides=("size",),
        shape=_divided("size"),
        weights=_conv_weights("size"),
        doc="patchify (kernel = stride = size), LayerNorm over channels",
    ),
    "tokens": PartKind(
        Role.STEM,
        "tokens",
        "TokenStem",
        "stems.py",
        {"out": None, "size": None},
        _building("TokenStem", "out", tokens=_token_count),
        divides=("size",),
        layout_out=Layout.SEQUENCE,
        shape=_tokens_shape,
        weights=_conv_weights("size"),
        doc="patchify to tokens [N, L, out], a learned position embedding",
    ),
}


TRANSITION_KINDS: dict[str, PartKind] = {
    "down conv": PartKind(
        Role.TRANSITION,
        "down conv",
        "DownConv",
        "transitions.py",
        {"out": None, "stride": 2, "kernel": 3},
        _building("DownConv", "out", inputs="dim"),
        odd=("kernel",),
        divides=("stride",),
        shape=_ceil_divided("stride"),
        weights=_conv_weights("kernel"),
        doc="strided conv and BatchNorm: H and W divided by the stride",
    ),
    "down pool": PartKind(
        Role.TRANSITION,
        "down pool",
        "DownPool",
        "transitions.py",
        {"out": None, "stride": 2},
        _building("DownPool", "out", inputs="dim"),
        divides=("stride",),
        shape=_divided("stride"),
        weights=_conv_weights(None),
        doc="average pooling, a 1x1 conv when the channels change, and BatchNorm",
    ),
    "up conv": PartKind(
        Role.TRANSITION,
        "up conv",
        "UpConv",
        "transitions.py",
        {"out": None, "scale": 2, "kernel": 3},
        _building("UpConv", "out", inputs="dim"),
        odd=("kernel",),
        shape=_times("scale"),
        weights=_conv_weights("kernel"),
        doc="nearest upsampling, conv and BatchNorm: H and W times the scale",
    ),
    "norm": PartKind(
        Role.TRANSITION,
        "norm",
        "Norm",
        "transitions.py",
        {},
        _building("Norm", inputs="dim", tokens=_tokens),
        layout_in=None,
        doc="BatchNorm (image layout) or LayerNorm (token layout), dim kept",
    ),
    "identity": PartKind(
        Role.TRANSITION,
        "identity",
        "",
        "",
        {},
        lambda a, ctx: Call("nn.Identity"),
        layout_in=None,
        runs=False,
        written=False,
        doc="two stages written one after the other",
    ),
}


HEAD_KINDS: dict[str, PartKind] = {
    "classifier": PartKind(
        Role.HEAD,
        "classifier",
        "ClassifierHead",
        "heads.py",
        {"classes": None},
        _classifier_head,
        layout_in=None,
        weights=lambda a, features: features * a["classes"],
        doc="global average pooling, LayerNorm, Linear",
    ),
    "none": PartKind(
        Role.HEAD,
        "none",
        "FeatureHead",
        "heads.py",
        {},
        lambda a, ctx: Call("FeatureHead"),
        layout_in=None,
        doc="the last stage's output, unchanged: the model returns features",
    ),
}

PART_KINDS: dict[Role, dict[str, PartKind]] = {
    Role.STEM: STEM_KINDS,
    Role.TRANSITION: TRANSITION_KINDS,
    Role.HEAD: HEAD_KINDS,
}


def model_files() -> tuple[str, ...]:
    """The templates a model may copy from (templates/models/), stems first, then
    transitions, then heads: those the registry's entries name."""
    return tuple(
        dict.fromkeys(
            k.template for kinds in PART_KINDS.values() for k in kinds.values() if k.template
        )
    )


def transition_name(word: str, kind: str | None) -> str:
    """The registry key of a written transition: `down conv`, `up conv`, `norm`."""
    return word if kind is None else f"{word} {kind}"


def head_text(head) -> str:
    """A head as graphs and summaries show it: `classifier(10)`, `none`."""
    values = ", ".join(str(value) for _, value in head.args)
    return f"{head.kind}({values})" if values else head.kind
