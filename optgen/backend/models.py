"""A model's IR to a ModelPlan: the stage classes, stem, transitions, head and the steps
of `forward_features`, ready for `templates/model.py.j2`.

A stage runs its network's class. Where a transition carries the states, the stages on
both sides exchange every slot their layer loop carries (`init_slots` / `forward_slots`
of the stage class) and the transition module maps each slot; where it carries the
output, the next stage starts from its own init (`stage(x)`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .. import ir
from ..kinds.calls import Call
from ..kinds.parts import (
    HEAD_KINDS,
    STEM_KINDS,
    TRANSITION_KINDS,
    PartContext,
    PartKind,
    model_files,
)
from ..naming import snake_case
from . import plan
from .library import copied_sources
from .lower import EmitPlan, lower


@dataclass(frozen=True)
class ModelPlan:
    model: ir.Model
    networks: tuple[ir.Network, ...]  # each network the stages run, once, in stage order
    plans: dict[str, EmitPlan]  # network name -> its plan
    stem: Call  # reads the constructor's in_chans
    stage_ctors: tuple[Call, ...]
    transition_ctors: tuple[Call, ...]  # nn.Identity() for an identity
    head: Call  # reads the constructor's num_classes
    num_features: int
    steps: tuple[plan.Op, ...]  # forward_features: StemCall, StageCall, TransitionCall
    sources: tuple[str, ...]  # the stem, transition and head sources the file copies

    @property
    def file_stem(self) -> str:
        return snake_case(self.model.name)


def part_sources(kinds: list[PartKind]) -> list[str]:
    """The sources of the parts a model builds, in the order stems, transitions, heads:
    the classes of templates/models/ it uses (and what they read), then inline sources."""
    sources: list[str] = []
    for role in ("stem", "transition", "head"):
        used = [k for k in kinds if k.role == role and k.class_name]
        wanted = [k.class_name for k in used if k.source is None]
        sources += copied_sources("templates/models", model_files(), dict.fromkeys(wanted))
        sources += dict.fromkeys(k.source_text() for k in used if k.source is not None)
    return sources


def stage_starts(model: ir.Model) -> tuple[int, ...]:
    """The layer index k of each stage's first layer.

    A stage whose states are carried in continues the recurrence of the stage before it,
    its layer count included (APG2's theta = 2/(k+2) goes on falling); a stage that starts
    from its own init after `carry output` starts at k = 0.
    """
    starts = [0]
    for i, t in enumerate(model.transitions):
        carried = t.carry is ir.Carry.STATES
        starts.append(starts[i] + model.stages[i].depth if carried else 0)
    return tuple(starts)


def stage_networks(model: ir.Model, networks: dict[str, ir.Network]) -> tuple[ir.Network, ...]:
    """Each stage's network as the stage runs it: its depth and its first layer."""
    return tuple(
        replace(networks[s.network], depth=s.depth, start=start)
        for s, start in zip(model.stages, stage_starts(model))
    )


def _stage_ctor(stage: ir.Stage, start: int, plan: EmitPlan) -> Call:
    start_arg = (("start", start),) if start and plan.uses_k else ()
    return Call(stage.network, (stage.dim,), (("depth", stage.depth), *start_arg))


def _transition_call(
    index: int, t: ir.Transition, kind: PartKind, count: int
) -> plan.TransitionCall:
    if t.carry is ir.Carry.OUTPUT:
        return plan.TransitionCall(index, t.kind, plan.SlotMap.OUTPUT)
    slots = plan.SlotMap.BATCHED if kind.batched_slots else plan.SlotMap.EACH
    return plan.TransitionCall(index, t.kind, slots, count)


def lower_model(model: ir.Model, networks: dict[str, ir.Network]) -> ModelPlan:
    used = tuple(dict.fromkeys(s.network for s in model.stages))
    plans = {name: lower(networks[name]) for name in used}
    tokens = model.layout == "sequence"
    features = model.stages[-1].dim
    stem_kind = STEM_KINDS[model.stem.kind]
    stem = stem_kind.constructor(dict(model.stem.args), PartContext(model.input, tokens=tokens))
    stage_ctors = tuple(
        _stage_ctor(s, start, plans[s.network])
        for s, start in zip(model.stages, stage_starts(model))
    )
    transition_kinds = [TRANSITION_KINDS[t.kind] for t in model.transitions]
    transition_ctors = tuple(
        kind.constructor(dict(t.args), PartContext(model.input, model.stages[i].dim, tokens))
        for i, (t, kind) in enumerate(zip(model.transitions, transition_kinds))
    )
    head_kind = HEAD_KINDS[model.head.kind]
    head = head_kind.constructor(dict(model.head.args), PartContext(model.input, features, tokens))
    steps: list[plan.Op] = [plan.StemCall()]
    for i, stage in enumerate(model.stages):
        net = networks[stage.network]
        before = model.transitions[i - 1].carry if i > 0 else ir.Carry.OUTPUT
        after = model.transitions[i].carry if i < len(model.transitions) else ir.Carry.OUTPUT
        p = plans[stage.network]
        output_slot = p.slots.index(p.output_var) if p.slots else 0
        steps.append(
            plan.StageCall(
                i,
                stage.network,
                stage.depth,
                from_slots=before is ir.Carry.STATES,
                to_slots=after is ir.Carry.STATES,
                output_slot=output_slot,
            )
        )
        assert (
            net.kind is not ir.NetworkKind.EQUILIBRIUM or (before, after) == (ir.Carry.OUTPUT,) * 2
        )
        if i < len(model.transitions) and transition_kinds[i].runs:
            count = len(p.slots)
            steps.append(_transition_call(i, model.transitions[i], transition_kinds[i], count))
    return ModelPlan(
        model=model,
        networks=tuple(networks[name] for name in used),
        plans=plans,
        stem=stem,
        stage_ctors=stage_ctors,
        transition_ctors=transition_ctors,
        head=head,
        num_features=features,
        steps=tuple(steps),
        sources=tuple(part_sources([stem_kind, *transition_kinds, head_kind])),
    )
