"""The typed lowering plan: the generated forward as a list of ops, not of source lines.

`lower.py` builds these ops from the IR; `writer.py` is the one place that turns them
into text. Every op records the names it defines and the tensor names it uses, so that
passes over the plan (dead-code removal, renaming the input) work on structure. Scalar
operands (a folded number, a named constant, `self.neg_beta[k]`) are `Scalar`s: a
printed expression together with the names it reads.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

from ..kinds.imports import Import
from ..present import float_literal


@dataclass(frozen=True, slots=True)
class Scalar:
    """A scalar operand: Python source for a number or a 0-dim tensor, and the names it reads."""

    text: str
    uses: tuple[str, ...] = ()

    @staticmethod
    def number(value: float) -> Scalar:
        return Scalar(float_literal(value))


class Reparametrization(Enum):
    """How a constrained learnable param is computed from its raw `nn.Parameter`."""

    IDENTITY = "identity"
    SOFTPLUS = "softplus"
    SIGMOID = "sigmoid"
    SCALED_SIGMOID = "scaled sigmoid"


@dataclass(frozen=True, slots=True)
class Op:
    """Base of every plan op. `USES` names the fields holding tensor names the op reads."""

    USES: ClassVar[tuple[str, ...]] = ()
    DEFINES: ClassVar[tuple[str, ...]] = ("target",)
    KERNELS: ClassVar[int] = 0  # elementwise torch kernels the op launches
    PURE: ClassVar[bool] = True  # removable when nothing reads what it defines

    @property
    def defines(self) -> tuple[str, ...]:
        out: list[str] = []
        for name in self.DEFINES:
            value = getattr(self, name)
            out.extend(value if isinstance(value, tuple) else [value])
        return tuple(out)

    @property
    def uses(self) -> tuple[str, ...]:
        out: list[str] = []
        for name in self.USES:
            value = getattr(self, name)
            out.extend(value if isinstance(value, tuple) else [value])
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Scalar):
                out.extend(value.uses)
            elif isinstance(value, tuple) and value and isinstance(value[0], Scalar):
                out.extend(u for s in value for u in s.uses)
        return tuple(out)

    @property
    def imports(self) -> frozenset[Import]:
        return frozenset()

    @property
    def kernel_count(self) -> int:
        return self.KERNELS

    def retargeted(self, target: str) -> Op:
        """The same op writing its result to another name."""
        return dataclasses.replace(self, target=target)

    def renamed(self, mapping: dict[str, str]) -> Op:
        """The op with the tensor names it reads renamed (what it defines stays)."""
        changes = {}
        for name in self.USES:
            value = getattr(self, name)
            if isinstance(value, tuple):
                changes[name] = tuple(mapping.get(v, v) for v in value)
            else:
                changes[name] = mapping.get(value, value)
        return dataclasses.replace(self, **changes)


# ---------------------------------------------------------------- a model's forward_features
# The steps of a model's `forward_features` (backend/models.py builds them): `x` flows
# from the stem through the stages, or the stages' `slots` where a transition carries
# the states. They read and define the module's own names (x, slots), not a layer's.
@dataclass(frozen=True, slots=True)
class StemCall(Op):
    """`x = self.stem(x)`."""

    DEFINES: ClassVar[tuple[str, ...]] = ()
    PURE: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class StageCall(Op):
    """Stage `index` on x, or on the slots the transition before it carried in; it hands
    on x, or its slots where the transition after it carries the states."""

    index: int
    network: str
    depth: int
    from_slots: bool
    to_slots: bool
    output_slot: int  # where the output state sits among the slots
    DEFINES: ClassVar[tuple[str, ...]] = ()
    PURE: ClassVar[bool] = False


class SlotMap(Enum):
    """How a transition maps what it carries."""

    OUTPUT = "output"  # carry output: x = transition(x)
    BATCHED = "batched"  # carry states, every slot in one batch (one BatchNorm statistic)
    EACH = "each"  # carry states, each slot on its own


@dataclass(frozen=True, slots=True)
class TransitionCall(Op):
    """Transition `index` (its kind as written, for the comment) on x or on the slots."""

    index: int
    kind: str
    slots: SlotMap
    count: int = 1  # the slots it carries (1 for carry output)
    DEFINES: ClassVar[tuple[str, ...]] = ()
    PURE: ClassVar[bool] = False


# ---------------------------------------------------------------- straight-line ops
@dataclass(frozen=True, slots=True)
class Comment(Op):
    """`# text`: the rule statement an op sequence implements, or what a kernel computes."""

    text: str
    DEFINES: ClassVar[tuple[str, ...]] = ()
    PURE: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class Const(Op):
    """`beta = 0.9`: a fixed param, named as in the rule."""

    target: str
    value: float


@dataclass(frozen=True, slots=True)
class ParamValue(Op):
    """`t = F.softplus(self.t_raw)`: a learnable param's constrained value, once per call."""

    target: str
    attr: str
    how: Reparametrization
    lo: float = 0.0
    hi: float = 1.0
    # A per-channel param on a layout whose channels are not last ([N, dim, H, W]): the
    # number of trailing axes of size 1 it takes, to broadcast along H and W.
    spatial_axes: int = 0
    # A tensor in scope whose dtype the states take: the value is cast to it, so that
    # under autocast (bfloat16 states, float32 parameters) a learnable step neither
    # promotes the states nor meets `torch.lerp`, which wants one dtype, in another.
    like: str = "x"

    @property
    def imports(self) -> frozenset[Import]:
        return (
            frozenset({Import.FUNCTIONAL})
            if self.how is Reparametrization.SOFTPLUS
            else frozenset()
        )


@dataclass(frozen=True, slots=True)
class ScalarDef(Op):
    """`coef = beta * t`: a coefficient holding learnable params."""

    target: str
    value: Scalar


@dataclass(frozen=True, slots=True)
class FetchBlock(Op):
    """`T = self.blocks["T"][k]` (or `[0]` for a shared block)."""

    target: str
    block: str
    shared: bool


@dataclass(frozen=True, slots=True)
class Alias(Op):
    """`target = source`: no kernel."""

    target: str
    source: str
    USES: ClassVar[tuple[str, ...]] = ("source",)


@dataclass(frozen=True, slots=True)
class Zeros(Op):
    target: str
    like: str
    size: str | None = None  # another space: `self.m` channels on `axis`, not like's
    axis: int = -1
    USES: ClassVar[tuple[str, ...]] = ("like",)
    KERNELS: ClassVar[int] = 1


@dataclass(frozen=True, slots=True)
class Lerp(Op):
    """`torch.lerp(start, end, weight)` = (1 - weight)*start + weight*end."""

    target: str
    start: str
    end: str
    weight: Scalar
    # A block's output under autocast is float16/bfloat16 while a state stays float32, and
    # lerp, unlike add, does not promote: the block output (`start` or `end`, None when
    # neither or both are one) takes the other operand's dtype (free when they agree).
    cast: str | None = None
    USES: ClassVar[tuple[str, ...]] = ("start", "end")
    KERNELS: ClassVar[int] = 1


@dataclass(frozen=True, slots=True)
class AddAlpha(Op):
    """`a + alpha*b`: `torch.add` (`sub` for alpha -1), or in place into `target` (= a)."""

    target: str
    a: str
    b: str
    alpha: Scalar | None  # None: 1
    subtract: bool = False
    inplace: bool = False
    scale_first: bool = False  # `torch.add(a, torch.mul(b, alpha))`: b a matrix product
    USES: ClassVar[tuple[str, ...]] = ("a", "b")
    KERNELS: ClassVar[int] = 1
    PURE: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class AddCMul(Op):
    """`a + value*tensor*b` (`torch.addcmul`), `tensor` a 0-dim coefficient."""

    target: str
    a: str
    tensor: str
    b: str
    value: Scalar | None
    inplace: bool = False
    USES: ClassVar[tuple[str, ...]] = ("a", "tensor", "b")
    KERNELS: ClassVar[int] = 1


@dataclass(frozen=True, slots=True)
class Scale(Op):
    """`torch.mul(source, factor)`: a fresh temporary that later terms add into."""

    target: str
    source: str
    factor: Scalar
    USES: ClassVar[tuple[str, ...]] = ("source",)
    KERNELS: ClassVar[int] = 1


class BlockReuse(Enum):
    """How a block call of a `backward reversible` module takes part in backward, which
    undoes layer k (`_inverse_layer`) and then runs it again with grad (`_layer`): the
    inverse of an exact rule evaluates the very block call the layer makes (heavy ball's
    T(x) at the x it rebuilds), so it keeps that output with its graph and the layer takes
    it instead of running the block a second time."""

    NONE = "none"  # `T_y = T(y)`
    KEEP = "_keep_block_call"  # in `_inverse_layer`: computed with grad, kept
    REUSE = "_reuse_block_call"  # in `_layer`: the kept output when backward has one


@dataclass(frozen=True, slots=True)
class BlockCall(Op):
    """`T_y = T(y)`, or through the reversible runtime (`BlockReuse`)."""

    target: str
    block: str
    arg: str
    reuse: BlockReuse = BlockReuse.NONE
    adjoint: str | None = None  # `K^T(y)`: its kind's `adjoint`, over {block} and {x}
    USES: ClassVar[tuple[str, ...]] = ("block", "arg")


def reuse_block_calls(ops: tuple[Op, ...], how: BlockReuse) -> tuple[Op, ...]:
    """The block calls of a straight-line body marked `how` (those in a nested body, such
    as the map a solve iterates, stay plain: backward keeps no output of an iteration)."""
    return tuple(
        dataclasses.replace(op, reuse=how) if isinstance(op, BlockCall) else op for op in ops
    )


@dataclass(frozen=True, slots=True)
class MapCall(Op):
    """An elementwise map: `torch.relu(e)`, `F.softshrink(e, lam)`, ..."""

    target: str
    template: str  # format string over {x} and the scalar argument names
    arg: str
    scalars: tuple[tuple[str, Scalar], ...] = ()
    needs: tuple[Import, ...] = ()
    launches: int = 1  # `e - torch.clamp(e, -lam, lam)`, softshrink by a tensor, is two
    USES: ClassVar[tuple[str, ...]] = ("arg",)

    @property
    def kernel_count(self) -> int:
        return self.launches

    @property
    def uses(self) -> tuple[str, ...]:
        return (self.arg,) + tuple(u for _, s in self.scalars for u in s.uses)

    @property
    def imports(self) -> frozenset[Import]:
        return frozenset(self.needs)


@dataclass(frozen=True, slots=True)
class Reduce(Op):
    """`dot_s_r = _per_sample_dot(s, r)`: one scalar per sample, shaped [B, 1, ...]."""

    target: str
    kind: str  # "dot" or "norm": the runtime function `_per_sample_<kind>`
    args: tuple[str, ...]
    USES: ClassVar[tuple[str, ...]] = ("args",)
    KERNELS: ClassVar[int] = 2  # a product and a sum; a norm counted alike


@dataclass(frozen=True, slots=True)
class Rotate(Op):
    """`x_prev, x = x, x_next`: the states and lags move one layer on (one tuple assignment)."""

    targets: tuple[str, ...]
    sources: tuple[str, ...]
    USES: ClassVar[tuple[str, ...]] = ("sources",)
    DEFINES: ClassVar[tuple[str, ...]] = ("targets",)


@dataclass(frozen=True, slots=True)
class Stack(Op):
    """`torch.stack([x, y], dim=1)`: several iterates packed for one equilibrium solve."""

    target: str
    sources: tuple[str, ...]
    USES: ClassVar[tuple[str, ...]] = ("sources",)


@dataclass(frozen=True, slots=True)
class Unpack(Op):
    """`x, y, x_prev = slots`: a stage of a model takes over the slots of the one before."""

    targets: tuple[str, ...]
    source: str
    USES: ClassVar[tuple[str, ...]] = ("source",)
    DEFINES: ClassVar[tuple[str, ...]] = ("targets",)


@dataclass(frozen=True, slots=True)
class Unstack(Op):
    """`x, y = z.unbind(1)`."""

    targets: tuple[str, ...]
    source: str
    USES: ClassVar[tuple[str, ...]] = ("source",)
    DEFINES: ClassVar[tuple[str, ...]] = ("targets",)


@dataclass(frozen=True, slots=True)
class EmptyWindow(Op):
    """`g_window = []`: the terms of a sliding-window sum `sum(i = k-m..k, ...)`."""

    target: str


@dataclass(frozen=True, slots=True)
class SlideWindow(Op):
    """The window takes this layer's term and the running sum drops the term that left it:

    g_window.append(term)
    if len(g_window) > size:
        history_sum = history_sum - g_window.pop(0)
    """

    window: str
    term: str
    total: str
    size: int
    USES: ClassVar[tuple[str, ...]] = ("window", "term", "total")
    DEFINES: ClassVar[tuple[str, ...]] = ()
    KERNELS: ClassVar[int] = 1


@dataclass(frozen=True, slots=True)
class Del(Op):
    """`del a, b`: temporaries freed after their last use (`free_temporaries`), so that a
    block output does not stay alive through the next layer's block call. It reads and
    defines nothing as far as the other passes go, and comes after them."""

    names: tuple[str, ...]
    DEFINES: ClassVar[tuple[str, ...]] = ()
    PURE: ClassVar[bool] = False


class LayerRuntime(Enum):
    """Who runs the layer loop of a module that saves memory in backward (language.md
    section 15): the runtime function the generated forward calls."""

    CHECKPOINT = "_checkpointed_layers"  # `checkpoint N`
    REVERSIBLE = "_reversible_layers"  # `backward reversible`


@dataclass(frozen=True, slots=True)
class RunLayers(Op):
    """`x, x_prev = _reversible_layers(self, (x, x_prev))`: the layer loop, one
    `self._layer(k, slots)` at a time, run by the memory runtime."""

    targets: tuple[str, ...]
    sources: tuple[str, ...]
    runtime: LayerRuntime
    USES: ClassVar[tuple[str, ...]] = ("sources",)
    DEFINES: ClassVar[tuple[str, ...]] = ("targets",)
    PURE: ClassVar[bool] = False


# ---------------------------------------------------------------- ops with a body
@dataclass(frozen=True, slots=True)
class FirstLayer(Op):
    """`if k == 0:` body: the history of a local starts as its value at the first layer."""

    body: tuple[Op, ...]
    DEFINES: ClassVar[tuple[str, ...]] = ()
    PURE: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class FromLayer(Op):
    """`if k >= start:` body: a sum whose lower bound is above 0 starts at that layer."""

    start: int
    body: tuple[Op, ...]
    DEFINES: ClassVar[tuple[str, ...]] = ()
    PURE: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class Solve(Op):
    """A local map `def fn(param): body; return result` and `target = _solve(self, fn, guess, layer)`."""

    target: str
    fn: str
    param: str
    body: tuple[Op, ...]
    result: str
    guess: str
    layer: Scalar
    USES: ClassVar[tuple[str, ...]] = ("guess",)
    PURE: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class SolveInverse(Op):
    """`def fn(y_arg): body; return result` and `y_arg = _solve_inverse(self, fn, start)`:
    a block argument `backward reversible` rebuilds by a fixed-point iteration (several
    coupled ones as tuples)."""

    targets: tuple[str, ...]
    fn: str
    params: tuple[str, ...]
    body: tuple[Op, ...]
    results: tuple[str, ...]
    starts: tuple[str, ...]
    USES: ClassVar[tuple[str, ...]] = ("starts",)
    DEFINES: ClassVar[tuple[str, ...]] = ("targets",)
    PURE: ClassVar[bool] = False

    @property
    def imports(self) -> frozenset[Import]:
        return frozenset({Import.WARNINGS})  # the runtime warns on a missed tolerance


@dataclass(frozen=True, slots=True)
class Loop(Op):
    """`for k in range(self.depth):` body."""

    body: tuple[Op, ...]
    DEFINES: ClassVar[tuple[str, ...]] = ()
    PURE: ClassVar[bool] = False


BODY_OPS = (FromLayer, FirstLayer, Solve, SolveInverse, Loop)


def walk(ops: tuple[Op, ...] | list[Op]):
    """Every op, those inside bodies included, in program order."""
    for op in ops:
        yield op
        if isinstance(op, BODY_OPS):
            yield from walk(op.body)


def kernels(ops) -> int:
    return sum(op.kernel_count for op in walk(ops))


def imports(ops) -> frozenset[Import]:
    found: set[Import] = set()
    for op in walk(ops):
        found |= op.imports
    return frozenset(found)


# ---------------------------------------------------------------- passes
def _all_uses(ops) -> dict[str, int]:
    counts: dict[str, int] = {}
    for op in walk(ops):
        names = list(op.uses)
        if isinstance(op, Solve):
            names.append(op.result)
        if isinstance(op, SolveInverse):
            names.extend(op.results)
        for name in names:
            counts[name] = counts.get(name, 0) + 1
    return counts


def remove_dead(ops: tuple[Op, ...], live: set[str]) -> tuple[Op, ...]:
    """Drop pure ops none of whose names is ever read (nor in `live`), until none is left.

    Names are read anywhere in the function (a loop body reads its own later
    definitions on the next iteration), so the test is conservative: an op is kept as
    soon as any op reads one of the names it defines.
    """
    while True:
        used = _all_uses(ops)
        pruned = _prune(ops, used, live)
        if pruned == ops:
            return ops
        ops = pruned


def _prune(ops: tuple[Op, ...], used: dict[str, int], live: set[str]) -> tuple[Op, ...]:
    kept: list[Op] = []
    for op in ops:
        if isinstance(op, BODY_OPS):
            op = dataclasses.replace(op, body=_prune(op.body, used, live))
        elif op.PURE and op.defines and not any(n in used or n in live for n in op.defines):
            continue
        kept.append(op)
    return tuple(kept)


def values_like(ops: tuple[Op, ...], like: str) -> tuple[Op, ...]:
    """The ops with each learnable value cast to the dtype of `like` (a method whose input
    is `slots`, not `x`)."""
    return tuple(
        dataclasses.replace(op, like=like) if isinstance(op, ParamValue) else op for op in ops
    )


def rename_input(ops: tuple[Op, ...], alias: str, source: str) -> tuple[Op, ...]:
    """Read `source` instead of its alias wherever `source` still holds the same value.

    `alias = source` saves the forward's argument before a state of the same name is
    rebound. Up to the first op that redefines `source` (a loop or a local map that
    does counts for its whole body), readers can take `source` itself, and the alias
    dies when nothing else reads it.
    """
    out: list[Op] = []
    intact = True
    for op in ops:
        if intact and isinstance(op, Alias) and op.target == alias:
            out.append(op)
            continue
        rebinds = source in _defined_names(op)
        if intact and not rebinds:
            op = _renamed_deep(op, {alias: source})
        elif intact and not isinstance(op, BODY_OPS):
            op = op.renamed({alias: source})  # reads happen before the op rebinds
        if rebinds:
            intact = False
        out.append(op)
    return tuple(out)


def _defined_names(op: Op) -> set[str]:
    names = set(op.defines) | set(_map_params(op))
    if isinstance(op, BODY_OPS):
        for inner in walk(op.body):
            names |= set(inner.defines) | set(_map_params(inner))
    return names


def _map_params(op: Op) -> tuple[str, ...]:
    """The parameters of a local map (bound inside it)."""
    if isinstance(op, Solve):
        return (op.param,)
    if isinstance(op, SolveInverse):
        return op.params
    return ()


def _renamed_deep(op: Op, mapping: dict[str, str]) -> Op:
    op = op.renamed(mapping)
    if isinstance(op, BODY_OPS):
        op = dataclasses.replace(op, body=tuple(_renamed_deep(o, mapping) for o in op.body))
    if isinstance(op, Solve):
        op = dataclasses.replace(op, result=mapping.get(op.result, op.result))
    if isinstance(op, SolveInverse):
        op = dataclasses.replace(op, results=tuple(mapping.get(r, r) for r in op.results))
    return op


# Ops whose result is a fresh tensor nothing else names: freed after its last use.
_FRESH_TENSORS = (BlockCall, MapCall, Lerp, AddAlpha, AddCMul, Scale, Zeros)


def free_temporaries(ops: tuple[Op, ...], keep: set[str], repeats: bool = True) -> tuple[Op, ...]:
    """`del` each temporary of a straight-line body right after its last use.

    A temporary is a name a top-level op of `ops` binds to a fresh tensor (a block or map
    output, a combination) and that is not in `keep` (what the body hands on: the loop's
    slots, a function's results), is not read before it is bound (carried from an earlier
    iteration), takes no part in an alias or a rotation (its tensor lives on under
    another name), and is not read inside a local map of a solve (the closure may run
    again in backward). Names dying at the same op share one `del` line. A body that does
    not `repeat` (a function's) frees nothing after its last allocating op: returning
    frees it.
    """
    defined_at: dict[str, int] = {}
    last_use: dict[str, int] = {}
    excluded = set(keep)
    for i, op in enumerate(ops):
        inner = list(walk(op.body)) if isinstance(op, BODY_OPS) else []
        for name in op.uses:
            if name not in defined_at:
                excluded.add(name)  # read before bound here: carried in
            last_use[name] = i
        for nested in inner:
            for name in nested.uses:
                last_use[name] = i
                if isinstance(op, (Solve, SolveInverse)) or name not in defined_at:
                    excluded.add(name)
        if isinstance(op, Solve):
            excluded.add(op.result)
        if isinstance(op, SolveInverse):
            excluded.update(op.results)
        if isinstance(op, (Alias, Rotate, Unpack, Stack, Unstack, RunLayers)):
            excluded.update(op.uses)
            excluded.update(op.defines)
        for name in op.defines:
            if isinstance(op, _FRESH_TENSORS):
                defined_at.setdefault(name, i)
            else:
                excluded.add(name)
    dying: dict[int, list[str]] = {}
    for name in defined_at:
        if name not in excluded and name in last_use:
            dying.setdefault(last_use[name], []).append(name)
    if not repeats:
        allocating = [i for i, op in enumerate(ops) if isinstance(op, _FRESH_TENSORS + BODY_OPS)]
        last = allocating[-1] if allocating else -1
        dying = {i: names for i, names in dying.items() if i < last}
    out: list[Op] = []
    for i, op in enumerate(ops):
        out.append(op)
        if i in dying:
            out.append(Del(tuple(dying[i])))
    return tuple(out)


def free_loop_temporaries(ops: tuple[Op, ...], keep: set[str]) -> tuple[Op, ...]:
    """`free_temporaries` in the body of every layer loop of `ops`."""
    return tuple(
        (
            dataclasses.replace(op, body=free_temporaries(op.body, keep))
            if isinstance(op, Loop)
            else op
        )
        for op in ops
    )
