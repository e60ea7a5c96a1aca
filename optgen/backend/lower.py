"""IR to EmitPlan: the generated forward as typed ops (`plan.py`), never as source text.

`lower(net)` runs one `Lowerer`, built up by job, each part owning what it writes:

* `lower_scope.Scope`: the variable of every value of the rule, allocated once;
* `lower_terms.Terms`: coefficients folded, linear combinations into the fewest kernels;
* `lower_forms.Forms`: block calls, maps and sums over history as ops;
* `lower_solve.Solves`: implicit statements, equilibria and `_inverse_layer`'s solves;
* `Lowerer` (here): the forward's init, the layer body and its rotation, and the plan.

`lower_params` plans the learnable params, `lower_schedules` the recursive schedules.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field

from .. import ir, schedules
from ..kinds import blocks
from ..kinds.blocks import BLOCK_KINDS, Layout
from ..kinds.calls import Call
from . import plan
from .lower_params import ParamPlan, fixed_param_values, param_plans
from .lower_schedules import CoupledPlan, RecurrencePlan, Schedule, coupled_plans, recurrence_plans
from .lower_solve import Solves

ONE = ir.ONE


@dataclass
class BlockPlan:
    name: str  # key in module.blocks
    var: str
    ctor: Call  # how one instance is built (its arguments read `dim`)
    shared: bool


@dataclass
class EmitPlan:
    class_name: str
    depth: int
    layout: Layout
    params: list[ParamPlan]
    blocks: list[BlockPlan]
    schedules: list[Schedule]
    forward: tuple[plan.Op, ...]  # the statements of forward, before its return
    output_var: str
    kinds: tuple[str, ...]  # the block kinds used, sorted
    dim_checks: tuple[blocks.DimCheck, ...] = ()
    kernels_per_layer: int = 0
    # The sizes of other spaces (`state y: m`): constructor arguments after dim.
    sizes: tuple[str, ...] = ()
    # For a model's stages: the loop-carried names, and the ops of `init_slots(x)` and
    # `forward_slots(slots)` (empty for an equilibrium, which carries its output only).
    slots: tuple[str, ...] = ()
    init_slots: tuple[plan.Op, ...] = ()
    forward_slots: tuple[plan.Op, ...] = ()
    kind: ir.NetworkKind = ir.NetworkKind.EXPLICIT
    solver: dict = field(default_factory=dict)
    backward: dict = field(default_factory=dict)
    # The layer index k is read (schedules, k-dependent start values, sums from a layer on):
    # the class takes `start`, the k of its first layer, to continue an earlier recurrence.
    uses_k: bool = False
    param_names: tuple[str, ...] = ()  # every param, in declaration order (params())
    fixed_params: list[tuple[str, str]] = field(default_factory=list)  # (name, expression)
    recurrences: tuple[RecurrencePlan, ...] = ()
    coupled: tuple[CoupledPlan, ...] = ()  # schedules that read each other
    # Memory in backward (language.md section 15): who runs the layer loop, the declared
    # `checkpoint N`, the ops of `_layer(k, slots)` and of `_inverse_layer(k, slots)`
    # (backward reversible), and the names the latter returns.
    runtime: plan.LayerRuntime | None = None
    checkpoint: int | None = None
    layer: tuple[plan.Op, ...] = ()
    # What `_layer(k, slots)` takes and returns: the slots, and with `checkpoint` the
    # history of locals and the terms of sliding windows (`layer_extras`).
    layer_slots: tuple[str, ...] = ()
    inverse: tuple[plan.Op, ...] = ()
    inverse_result: tuple[str, ...] = ()

    @property
    def block_kinds(self) -> list[blocks.BlockKind]:
        return [BLOCK_KINDS[k] for k in self.kinds]

    @property
    def sources(self) -> list[str]:
        """The sources of its block kinds (their shared helpers: `helpers`)."""
        return [kind.source_text() for kind in self.block_kinds]

    @property
    def helpers(self) -> list[str]:
        """The helper sources its block kinds share (templates/blocks/), each once."""
        return list(dict.fromkeys(h for kind in self.block_kinds for h in kind.helpers))

    @property
    def activations(self) -> frozenset[str]:
        """The activations its blocks are built with (their `act` arguments)."""
        return frozenset(value for b in self.blocks for key, value in b.ctor.kwargs if key == "act")

    @property
    def imports(self) -> frozenset[plan.Import]:
        found = set(plan.imports((*self.forward, *self.layer, *self.inverse)))
        if any(p.needs_math for p in self.params):
            found.add(plan.Import.MATH)
        texts = [s.expr for s in self.schedules] + [code for _, code in self.fixed_params]
        texts += [r.step for r in self.recurrences]
        texts += [step for c in self.coupled for step in c.steps]
        texts += [text for op in plan.walk(self.forward) for text in _scalar_texts(op)]
        if any("math." in text for text in texts):
            found.add(plan.Import.MATH)
        for kind in self.block_kinds:
            found |= kind.imports
        if self.kind is not ir.NetworkKind.EXPLICIT:
            found.add(plan.Import.WARNINGS)  # the solver runtime warns on a missed tolerance
        if self.runtime is plan.LayerRuntime.REVERSIBLE:
            found.add(plan.Import.WARNINGS)  # a depth float32 cannot carry back
        return frozenset(found)


def _scalar_texts(op: plan.Op) -> list[str]:
    """The coefficients an op prints (a fixed `sqrt(t)` is written math.sqrt(t))."""
    texts = []
    for f in dataclasses.fields(op):
        value = getattr(op, f.name)
        items = value if isinstance(value, tuple) else (value,)
        for item in items:
            if isinstance(item, tuple):  # MapCall's (name, Scalar) pairs
                item = item[-1] if item else None
            if isinstance(item, plan.Scalar):
                texts.append(item.text)
    return texts


class Lowerer(Solves):
    """One network's plan: the prologue, the init from the input, the layer body with
    its rotation of lags, and the forms of the module that hold them."""

    def __init__(self, net: ir.Network):
        super().__init__(net)
        # The forward's ops after the prologue and before the layer loop: the states, lags,
        # x[0] and sums from the input.
        self.init: list[plan.Op] = []

    # ------------------------------------------------------------ the layer
    def lower(self) -> EmitPlan:
        net = self.net
        # Three parts: `prologue` (constants, param values, shared blocks: no input needed),
        # `init` (the states, lags, x[0] and sums from the input), and the layer loop.
        self.prologue.extend(
            plan.Const(self.constant_var[s], float(p.value)) for s, p in self.constants.items()
        )
        if self.alias_input:
            self.init.append(plan.Alias(self.input_var, "x"))
        params, values = param_plans(net, self.param_var, self.attrs)
        self.prologue.extend(values)
        blocks_ = [
            BlockPlan(b.name, self.block_var[b.name], block_ctor(b), b.shared) for b in net.blocks
        ]
        self.init_states()
        runtime = self.layer_runtime()
        for slot in self.carried:
            atom = slot.atom
            if isinstance(atom, ir.HistorySum):
                var = self.ns.create(slot.name)
                self.accumulators[atom] = var
                self.init.append(plan.Zeros(var, self.input_var))
                if atom.window is None:
                    continue
                if runtime is plan.LayerRuntime.CHECKPOINT:
                    n = len(self.window_slots)
                    base = "window" if n == 0 else f"window{n + 1}"
                    self.window_slots[atom] = tuple(
                        self.ns.create(ir.lag_name(base, j)) for j in range(1, atom.window + 2)
                    )
                else:
                    self.windows[atom] = self.ns.create("window")
                    self.init.append(plan.EmptyWindow(self.windows[atom]))
        for b in blocks_:
            fetch = plan.FetchBlock(b.var, b.name, b.shared)
            (self.prologue if b.shared else self.layer_setup).append(fetch)
        body = self.layer_body()
        rotation = self.rotation()
        layer = tuple(self.layer_setup + body + rotation)
        output = self.state_var[net.output]
        layer_method, inverse_method, inverse_result = (), (), ()
        layer_slots: tuple[str, ...] = ()
        if net.equilibrium:
            runtime = None
            forward = self._finish((*self.prologue, *self.init, *self.equilibrium(layer)), {output})
            slots, init_slots, forward_slots = (), (), ()
        else:
            loop = plan.Loop(layer)
            slots = self.slots()
            unpack = plan.Unpack(slots, "slots")
            # A module saving memory in backward runs its layers through the runtime, one
            # `_layer(k, slots)` call at a time (language.md section 15); with `checkpoint`
            # that call also takes and returns what a layer keeps for the next ones.
            extra, start = self.layer_extras(runtime)
            layer_slots = (*slots, *extra)
            run = loop if runtime is None else plan.RunLayers(layer_slots, layer_slots, runtime)
            forward = self._finish((*self.prologue, *self.init, *start, run), {output})
            init_slots = self._finish((*self.prologue, *self.init), set(slots))
            forward_slots = plan.remove_dead((*self.prologue, unpack, *start, run), set(slots))
            forward_slots = plan.values_like(forward_slots, "slots[0]")
            if runtime is not None:
                layer_unpack = plan.Unpack(layer_slots, "slots")
                live = set(layer_slots)
                layer_method = plan.remove_dead((*self.prologue, layer_unpack, *layer), live)
                layer_method = plan.free_temporaries(layer_method, live, repeats=False)
                layer_method = plan.values_like(layer_method, "slots[0]")
            if runtime is plan.LayerRuntime.REVERSIBLE:
                inverse_method, inverse_result = self.inverse_layer(slots)
                inverse_method = plan.values_like(inverse_method, "slots[0]")
                inverse_method = plan.reuse_block_calls(inverse_method, plan.BlockReuse.KEEP)
                layer_method = plan.reuse_block_calls(layer_method, plan.BlockReuse.REUSE)
                inverse_method = plan.free_temporaries(
                    inverse_method, set(inverse_result), repeats=False
                )
            # Last: a block output must not stay alive through the next block call.
            forward = plan.free_loop_temporaries(forward, set(slots))
            forward_slots = plan.free_loop_temporaries(forward_slots, set(slots))
        kinds = tuple(sorted({b.kind for b in net.blocks}))
        checks = tuple(
            c for b in net.blocks for c in BLOCK_KINDS[b.kind].dim_checks(b, BLOCK_KINDS[b.kind])
        )
        recurrences, coupled = coupled_plans(net, recurrence_plans(net))
        return EmitPlan(
            class_name=net.name,
            depth=net.depth,
            layout=Layout(net.layout),
            params=params,
            blocks=blocks_,
            schedules=self.schedules,
            param_names=tuple(p.name for p in net.params),
            fixed_params=fixed_param_values(net),
            forward=forward,
            output_var=output,
            kinds=kinds,
            dim_checks=tuple(dict.fromkeys(checks)),
            kernels_per_layer=plan.kernels(layer),
            sizes=net.sizes,
            slots=slots,
            init_slots=init_slots,
            forward_slots=forward_slots,
            kind=net.kind,
            solver=solver_config(net),
            backward=backward_config(net),
            uses_k=bool(self.schedules) or self.reads_k or any(p.depends_on_k for p in net.params),
            recurrences=recurrences,
            coupled=coupled,
            runtime=runtime,
            checkpoint=net.checkpoint,
            layer=layer_method,
            layer_slots=layer_slots if runtime is not None else (),
            inverse=inverse_method,
            inverse_result=inverse_result,
        )

    def layer_runtime(self) -> plan.LayerRuntime | None:
        if self.net.reversible:
            return plan.LayerRuntime.REVERSIBLE
        if self.net.checkpoint is not None:
            return plan.LayerRuntime.CHECKPOINT
        return None

    def layer_extras(self, runtime) -> tuple[tuple[str, ...], tuple[plan.Op, ...]]:
        """What `_layer(k, slots)` carries besides the slots with `checkpoint` (whose
        groups of layers see nothing but their slots), and the ops giving their values
        before the first layer: the history of each local (set at layer 0 from the local
        itself: the state stands in until then) and the last terms of each sliding window
        (zeros: absent terms). The plain loop keeps these in the forward's own variables
        (a window in a list); a model's stage starts them again (language.md section 5.2)."""
        if runtime is not plan.LayerRuntime.CHECKPOINT:
            return (), ()
        like = self.state_var[self.net.states[0]]
        names: list[str] = []
        ops: list[plan.Op] = []
        for lags in self.local_lag_var.values():
            names += lags
            ops += [plan.Alias(lag, like) for lag in lags]
        for kept in self.window_slots.values():
            names += kept
            ops.append(plan.Zeros(kept[0], like))
            ops += [plan.Alias(term, kept[0]) for term in kept[1:]]
        return tuple(names), tuple(ops)

    def _finish(self, ops: tuple[plan.Op, ...], live: set[str]) -> tuple[plan.Op, ...]:
        if self.alias_input:
            ops = plan.rename_input(ops, self.input_var, "x")
        return plan.remove_dead(ops, live)

    def slots(self) -> tuple[str, ...]:
        """The variables of what the layer loop carries (`ir.carried_slots`): states, lags,
        x[0], sums, and the input it reads. A model's stage hands these to the next stage
        (`carry states`)."""
        return tuple(self.slot_var(slot.atom) for slot in self.carried)

    def slot_var(self, atom: ir.Atom) -> str:
        """The variable holding a slot (`ir.Slot.atom`) in the forward."""
        if isinstance(atom, ir.StateAt):
            return (
                self.state_var[atom.name]
                if atom.lag == 0
                else self.lag_var[atom.name][-atom.lag - 1]
            )
        if isinstance(atom, ir.Initial):
            return self.initial_var[atom.name]
        if isinstance(atom, ir.HistorySum):
            return self.accumulators[atom]
        return self.input_var  # InputValue()

    def init_states(self) -> None:
        values: dict[ir.Atom, str] = {ir.InputValue(): self.input_var}
        for assign in self.net.init:
            var = self.state_var[assign.state]
            terms = [(values[a], self.coef(c)) for a, c in assign.form.terms]
            space = self.net.space(assign.state)
            if var == "x" and terms == [(self.input_var, self.coef(ONE))]:
                pass  # the forward argument `x` already holds the input
            elif not terms and space != ir.DIM_SPACE:
                axis = Layout(self.net.layout).channel_axis
                self.init.append(plan.Zeros(var, self.input_var, space, axis))
            else:
                self.init.extend(self.combine(var, terms, self.input_var))
            values[ir.Initial(assign.state)] = var
        for s in self.net.states:
            if s in self.initial_var:
                self.init.append(plan.Alias(self.initial_var[s], self.state_var[s]))
            for lag in self.lag_var[s]:
                self.init.append(plan.Alias(lag, self.state_var[s]))

    def layer_body(self) -> list[plan.Op]:
        net = self.net
        values: dict[ir.Atom, str] = {ir.InputValue(): self.input_var}
        for s in net.states:
            values[ir.StateAt(s, 0)] = self.state_var[s]
            for j, lag in enumerate(self.lag_var[s], start=1):
                values[ir.StateAt(s, -j)] = lag
            if s in self.initial_var:
                values[ir.Initial(s)] = self.initial_var[s]
        ops: list[plan.Op] = []
        for index, st in enumerate(net.statements):
            ops.append(plan.Comment(st.text))
            if st.is_state and self.self_referencing(st):
                ops.extend(self.implicit_statement(st, index, values))
                continue
            single = st.form.terms[0] if len(st.form.terms) == 1 else None
            for atom in st.form.atoms():
                # `g = T(x)`: the block output is named g itself.
                name = (
                    self.local_var[st.target]
                    if (single and single[1] == 1 and not st.is_state)
                    else None
                )
                ops.extend(self.materialize(atom, values, name))
            if st.is_state:
                target = self.next_target(st.target, index)
                values[ir.StateAt(st.target, 1)] = target
            else:
                target = self.local_var[st.target]
                values[ir.Local(st.target)] = target
            terms = [(values[a], self.coef(c)) for a, c in st.form.terms]
            ops.extend(self.combine(target, terms, self.input_var))
            if not st.is_state and st.target in self.local_lag_var:
                ops.extend(self.local_history(st.target, target, values))
        return ops

    def local_history(self, name: str, value: str, values: dict) -> list[plan.Op]:
        """Before layer 0 a local's history equals its value at layer 0."""
        lags = self.local_lag_var[name]
        for j, var in enumerate(lags, start=1):
            values[ir.Local(name, -j)] = var
        return [plan.FirstLayer((plan.Rotate(tuple(lags), (value,) * len(lags)),))]

    @staticmethod
    def self_referencing(st: ir.Assign) -> bool:
        """Whether a block in the statement is applied to the value the statement defines."""
        return ir.StateAt(st.target, 1) in st.form.walk()

    def rotation(self) -> list[plan.Op]:
        targets, sources = [], []
        for s in self.net.states:
            # x_prevL, ..., x_prev, x = x_prev(L-1), ..., x, x_next
            chain = [*reversed(self.lag_var[s]), self.state_var[s]]
            shifted = chain[1:] + [self.next_var[s]]
            if chain == shifted:
                continue
            targets.extend(chain)
            sources.extend(shifted)
        for name, lags in self.local_lag_var.items():
            # g_prev2, g_prev = g_prev, g
            chain = list(reversed(lags))
            targets.extend(chain)
            sources.extend(chain[1:] + [self.local_var[name]])
        if not targets:
            return []
        return [plan.Rotate(tuple(targets), tuple(sources))]


def solver_config(net: ir.Network) -> dict:
    return {} if net.kind is ir.NetworkKind.EXPLICIT else blocks.solver_config(net.solver)


def backward_config(net: ir.Network) -> dict:
    """The backward mode; implicit adjoint solves inherit max_iter and tol from the solver."""
    if net.kind is ir.NetworkKind.EXPLICIT:
        return {}
    return blocks.backward_config(net.backward, solver_config(net))


def block_ctor(block: ir.Block) -> Call:
    kind = BLOCK_KINDS[block.kind]
    return kind.constructor(block, kind)


@functools.cache
def with_depth(net: ir.Network) -> ir.Network:
    """`net` with `L` as `Depth(k)`: tabulated per layer by the constructor, from `depth`."""
    if not ir.reads_depth(net):
        return net
    return ir.substituted(net, {ir.L: schedules.Depth(ir.K)})


def lower(net: ir.Network) -> EmitPlan:
    """The plan of one network (cached: a model's checks and its files use it again)."""
    return Lowerer(with_depth(net)).lower()
