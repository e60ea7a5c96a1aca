"""One model (docs/language.md, "Models"): its stages in order with the transitions
between them, each stage's network, and what flows from one part to the next (layout,
channels, spatial size) checked where it is given, into `ir.Model`."""

from __future__ import annotations

from .. import ir
from ..kinds.blocks import BLOCK_KINDS, Layout
from ..kinds.parts import STEM_KINDS, TRANSITION_KINDS, transition_name
from ..syntax import ast
from .context import MAX_DEPTH, Context, Job, _did_you_mean
from .declarations import DeclarationResolver
from .parts import _CARRIES, _STAGE_ARGS, PartResolver, _arg_span

# The declarations a model holds at most once (a model has several stages).
ONCE = {ast.InputDecl: "input", ast.StemDecl: "stem", ast.HeadDecl: "head"}
_LAYOUT_NAMES = {
    "vector": "the vector layout [..., dim]",
    "image": "the image layout [N, dim, H, W]",
    "sequence": "the token layout [N, L, dim]",
}


class ModelResolver(Job):
    """The IR of one model, given the networks of its file."""

    def __init__(self, ctx: Context, declarations: DeclarationResolver, parts: PartResolver):
        super().__init__(ctx)
        self.declarations = declarations
        self.parts = parts

    def model(
        self, node: ast.Model, networks: dict[str, ir.Network], declared: dict[str, set[str]]
    ) -> ir.Model | None:
        """The IR of one model, or None when it has errors (all recorded in `report`).

        `networks` are the file's networks that resolved, `declared` the names of its
        networks and of its models: a stage of a network that failed is not reported again.
        """
        errors_before = len(self.report.errors)
        name = node.name.id
        self.declarations.check_class_name(node.name, "model", "OptResNet")
        decls = self.declarations.grouped(node, "model", ONCE, "a model has one {}")
        for kind, message, hint in (
            (ast.InputDecl, f"model {name} declares no input", "add a line: input [3, 32, 32]"),
            (ast.StemDecl, f"model {name} has no stem", "add a line: stem conv(out=32)"),
            (
                ast.StageDecl,
                f"model {name} has no stage",
                "add a line: stage Net(dim=32, depth=4), Net a network of this file",
            ),
            (
                ast.HeadDecl,
                f"model {name} has no head",
                "add a line: head classifier(classes=10), or head none to return features",
            ),
        ):
            if kind not in decls:
                self.report.error(node.name.span, message, hint)

        size = None
        if ast.InputDecl in decls:
            size = self.attempt(self.parts.model_input, decls[ast.InputDecl][0])
        stem = None
        if ast.StemDecl in decls:
            stem = self.attempt(self.parts.model_stem, decls[ast.StemDecl][0])
        head = None
        if ast.HeadDecl in decls:
            head = self.attempt(self.parts.model_head, decls[ast.HeadDecl][0])

        stages, between = self.model_sequence(node, networks, declared)

        layout = _stem_layout(stem) if stem is not None else None
        # What flows into the next stage: its channels (and what gives them, for messages)
        # and the spatial size, (H, W) or (L,); None where an earlier error left it unknown.
        channels: int | None = None
        giver = ""
        spatial: tuple[int, ...] | None = None
        if stem is not None:
            channels, giver = stem.out, f"stem {stem.kind} gives {stem.out} {_unit(layout)}"
            if size is not None:
                spatial = self.attempt(self.parts.stem_shape, stem, size, decls[ast.StemDecl][0])
        shapes: list[tuple[int, ...]] = []
        transitions: list[ir.Transition] = []
        for i, (d, stage, net) in enumerate(stages):
            if i > 0:
                written = between[i - 1]
                prev_decl, _, prev_net = stages[i - 1]
                transition = self.attempt(
                    self.model_transition,
                    written,
                    d,
                    stem,
                    layout,
                    channels,
                    prev_net,
                    net,
                )
                if transition is None:
                    channels = spatial = None
                else:
                    transitions.append(transition)
                    channels = transition.out
                    if written is not None and "out" in TRANSITION_KINDS[transition.kind].args:
                        giver = f"{_transition_text(written[0])} gives {channels} {_unit(layout)}"
                    elif written is not None:
                        giver = (
                            f"norm keeps the {channels} {_unit(layout)} of stage "
                            f"{prev_decl.network.id}"
                        )
                    if spatial is not None:
                        spatial = self.attempt(
                            self.parts.transition_shape, transition, written, spatial
                        )
            if stage is None:
                channels = None
                continue
            if net is not None and layout is not None and net.layout != layout:
                self.report.error(
                    d.network.span,
                    f"stage {net.name} {_blocks_text(net)}, but {_layout_giver(stem)}",
                    _layout_hint(layout),
                )
            if channels is not None and stage.dim != channels:
                self.report.error(
                    _arg_span(d, "dim"),
                    f"stage {stage.network} has dim={stage.dim}, but {giver}",
                    f"write dim={channels}",
                )
            if net is not None:
                self.attempt(self.stage_dim_checks, d, stage, net)
            if spatial is not None:
                shapes.append((stage.dim, *spatial) if layout == "image" else (*spatial, stage.dim))
            channels = stage.dim
            giver = f"stage {stage.network} before it gives {channels} {_unit(layout)}"

        if len(self.report.errors) > errors_before:
            return None
        if any(stage is None or net is None for _, stage, net in stages):
            return None  # a stage runs a network whose errors are already reported
        output_shape = (channels, *spatial) if layout == "image" else (*spatial, channels)
        model = ir.Model(
            name=name,
            input=size,
            stem=stem,
            stages=tuple(stage for _, stage, _ in stages),
            transitions=tuple(transitions),
            head=head,
            layout=layout,
            shapes=tuple(shapes),
            output_shape=output_shape,
            span=node.span,
        )
        assert len(model.transitions) == len(model.stages) - 1 == len(model.shapes) - 1
        return model

    def model_sequence(
        self, node: ast.Model, networks: dict[str, ir.Network], declared: dict[str, set[str]]
    ) -> tuple[list, list]:
        """The stages in order, each `(decl, stage or None, network or None)`, and the
        transition written before each stage but the first, `(decl, args or None)` or None
        where two stages follow one another. A misplaced transition is reported here."""
        name = node.name.id
        stages: list[tuple[ast.StageDecl, ir.Stage | None, ir.Network | None]] = []
        between: list[tuple[ast.TransitionDecl, dict | None] | None] = []
        pending: tuple[ast.TransitionDecl, dict | None] | None = None
        misplaced: list[tuple[ast.TransitionDecl, str, str]] = []
        for d in node.decls:
            if isinstance(d, ast.StageDecl):
                checked = self.attempt(self.model_stage, d, networks, declared)
                stage, net = checked if checked is not None else (None, None)
                if stages:
                    between.append(pending)
                stages.append((d, stage, net))
                pending = None
            elif isinstance(d, ast.TransitionDecl):
                args = self.attempt(self.parts.model_transition_args, d)
                what = _transition_text(d)
                if not stages:
                    misplaced.append(
                        (
                            d,
                            f"{what} comes before the first stage of model {name}",
                            "a transition sits between two stages; the stem feeds the first stage",
                        )
                    )
                elif pending is not None:
                    misplaced.append(
                        (
                            d,
                            f"{what} is a second transition after stage {stages[-1][0].network.id}",
                            "write one transition between two stages",
                        )
                    )
                else:
                    pending = (d, args)
        if pending is not None:
            d = pending[0]
            misplaced.append(
                (
                    d,
                    f"{_transition_text(d)} comes after the last stage of model {name}",
                    "the last stage feeds the head: add a stage after it, or remove it",
                )
            )
        if stages:
            for d, message, hint in misplaced:
                self.report.error(d.word.span, message, hint)
        return stages, between

    def model_stage(
        self, d: ast.StageDecl, networks: dict[str, ir.Network], declared: dict[str, set[str]]
    ) -> tuple[ir.Stage, ir.Network | None]:
        """The stage and its network (None when the network has errors of its own)."""
        name = d.network.id
        unknown = None
        if name in declared["network"]:
            pass
        elif name in declared["model"]:
            unknown = (f"'{name}' is a model; a stage runs a network", None)
        else:
            names = sorted(declared["network"])
            unknown = (
                f"unknown network '{name}'",
                _did_you_mean(name, names)
                or (
                    f"a stage runs a network of this file: {', '.join(names)}"
                    if names
                    else f"declare it in this file: network {name} {{ ... }}"
                ),
            )
        if unknown is not None:
            self.report.error(d.network.span, *unknown)
        args, spans = self.parts.model_args(d.args, _STAGE_ARGS, f"stage {name}", d.network.span)
        if args["depth"] > MAX_DEPTH:
            self.fail(
                spans["depth"],
                f"depth {args['depth']} of stage {name} is out of range",
                f"use between 1 and {MAX_DEPTH} layers",
            )
        if unknown is not None:
            self.report.abandon()
        net = networks.get(name)
        window = next(
            (
                atom
                for st in (net.statements if net else ())
                for atom in st.form.walk()
                if isinstance(atom, ir.HistorySum) and atom.window is not None
            ),
            None,
        )
        if window is not None:
            self.fail(
                d.network.span,
                f"network {name} sums over a sliding window ({window.show()}), which a model "
                "stage cannot hold yet",
                "sum from a fixed layer (sum(i = 0..k, ...)) in a model's stages",
            )
        if net is not None and net.state_sizes:
            state, size = net.state_sizes[0]
            self.fail(
                d.network.span,
                f"network {name} has a state in a space of its own ({state}: {size}), which "
                "a model stage cannot build yet: a stage gives its network dim only",
                "run the primal-dual network as a module of its own",
            )
        return ir.Stage(name, args["dim"], args["depth"], d.span), net

    def stage_dim_checks(self, d: ast.StageDecl, stage: ir.Stage, net: ir.Network) -> None:
        """The conditions the generated constructor puts on dim (fractional block
        arguments, transformer heads), checked here for the stage's dim."""
        for block in net.blocks:
            kind = BLOCK_KINDS[block.kind]
            for check in kind.dim_checks(block, kind):
                if eval(check.condition, {"__builtins__": {}}, {"dim": stage.dim}):
                    self.fail(
                        _arg_span(d, "dim"),
                        f"stage {net.name} with dim={stage.dim}: {check.message}",
                        "choose a dim that the blocks of the network accept",
                    )

    def model_transition(
        self,
        written: tuple[ast.TransitionDecl, dict | None] | None,
        next_decl: ast.StageDecl,
        stem: ir.Stem | None,
        layout: str | None,
        channels: int | None,
        prev_net: ir.Network | None,
        next_net: ir.Network | None,
    ) -> ir.Transition:
        """The transition before stage `next_decl` ("identity" when none is written)."""
        same = prev_net is not None and next_net is not None and prev_net.name == next_net.name
        default = ir.Carry.STATES if same else ir.Carry.OUTPUT
        if written is None:
            if channels is None:
                self.report.abandon()
            return ir.Transition("identity", channels, default, next_decl.span)
        d, args = written
        what = _transition_text(d)
        name = transition_name(d.word.id, d.kind.id if d.kind is not None else None)
        known = TRANSITION_KINDS.get(name)
        # An unknown kind (reported already) after `down` or `up` resizes an image.
        needs = known.layout_in if known is not None else Layout.IMAGE
        if needs is not None and layout is not None and layout != needs and stem is not None:
            self.report.error(
                d.word.span,
                f"{what} needs {_LAYOUT_TEXT[needs]}, but {_layout_giver(stem)}",
                _transition_hint(layout),
            )
        carry = default
        if prev_net is not None and next_net is not None:
            differ = set(prev_net.states) != set(next_net.states)
            pair = f"{_states_text(prev_net)} and {_states_text(next_net)}"
            if d.carry is not None and d.carry.id == "states" and differ:
                self.report.error(
                    d.carry.span,
                    f"carry states between {pair}, whose state sets differ",
                    f"write carry output: stage {next_net.name} then starts from its init",
                )
            elif d.carry is None and differ:
                self.report.error(
                    d.word.span,
                    f"{what} between {pair} must say carry output",
                    "their state sets differ, so only the output state is handed over: "
                    f"write {what}{'(...)' if d.kind else ''} carry output",
                )
        if d.carry is not None and d.carry.id in _CARRIES:
            carry = ir.Carry(d.carry.id)
        if args is None:
            self.report.abandon()
        spec = TRANSITION_KINDS[name].args
        if "out" in spec:
            out = args["out"]
        elif channels is None:
            self.report.abandon()
        else:
            out = channels  # norm keeps the channels
        return ir.Transition(name, out, carry, d.span, tuple((k, args[k]) for k in spec))


def _unit(layout: str | None) -> str:
    return "features" if layout == "sequence" else "channels"


def _transition_text(d: ast.TransitionDecl) -> str:
    return d.word.id if d.kind is None else f"{d.word.id} {d.kind.id}"


def _states_text(net: ir.Network) -> str:
    return f"{net.name} (states {', '.join(net.states)})"


def _blocks_text(net: ir.Network) -> str:
    return f"has blocks of {_LAYOUT_NAMES[net.layout]}" if net.blocks else "has no blocks"


# What a transition that needs another layout says, by the layout it is given.
_LAYOUT_TEXT = {
    "image": "the image layout [N, C, H, W]",
    "sequence": "the token layout [N, L, C]",
}
_STAGES_TEXT = {"image": "image stages", "sequence": "token stages"}


def _transition_hint(layout: str) -> str:
    """The transitions of the registry that take `layout`: `write norm, or nothing`."""
    fits = [
        name
        for name, kind in TRANSITION_KINDS.items()
        if kind.written and kind.layout_in in (None, layout)
    ]
    return f"between {_STAGES_TEXT[layout]} write {', '.join(fits)}, or nothing"


def _either(names: list[str]) -> str:
    return " or ".join(names) if len(names) < 3 else f"{', '.join(names[:-1])} or {names[-1]}"


def _layout_hint(layout: str) -> str:
    """The stems of the registry giving `layout` and the block kinds taking it: `after a
    tokens stem, a stage runs a network of transformer blocks`."""
    stems = [name for name, kind in STEM_KINDS.items() if _gives(kind) == layout]
    # Operators map between spaces: a primal-dual network, not what a stage is built from.
    blocks = [
        name for name, kind in BLOCK_KINDS.items() if kind.layout == layout and kind.adjoint is None
    ]
    return f"after a {_either(stems)} stem, a stage runs a network of {_either(blocks)} blocks"


def _gives(kind) -> str:
    return (kind.layout_out or kind.layout_in).value


def _stem_layout(stem: ir.Stem) -> str:
    return _gives(STEM_KINDS[stem.kind])


def _layout_giver(stem: ir.Stem) -> str:
    return f"the {stem.kind} stem gives {_LAYOUT_TEXT[_stem_layout(stem)]}"
