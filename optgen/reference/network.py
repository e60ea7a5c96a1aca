"""The reference semantics of a network: the rule evaluated from its definition.

`trace(network, module, x)` runs the update `module.depth` times (language.md section 6):
initial values from the inits, then at every layer the statements in order, an implicit
statement solved for its own next iterate, and keeps every iterate and local of every
layer. An equilibrium network is the fixed point of its update instead. The module is
read for its blocks (`module.blocks[name][layer]`, entry 0 when shared or in an
equilibrium), its learnable params (`params.py`), `module.depth` and `module.start`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .. import ir
from ..kinds.blocks import Layout
from .layer import Layer
from .maps import vjp_adjoint, zeros_in
from .params import LearnableParams
from .scalars import Coefficients, Unsupported
from .solve import FixedPoint


@dataclass
class Trace:
    """Every value of a run: `states[x]` is [x_0, ..., x_depth] (for an equilibrium,
    [x_0, x*]), `locals[g]` the local at every layer, `output` the returned state."""

    states: dict[str, list[torch.Tensor]]
    locals: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    output: torch.Tensor | None = None


def evaluate(
    network: ir.Network,
    module: nn.Module,
    x: torch.Tensor,
    *,
    solver: FixedPoint | None = None,
    depth: int | None = None,
    start: int | None = None,
) -> torch.Tensor:
    """The output state after the last layer: what `module(x)` should return."""
    return trace(network, module, x, solver=solver, depth=depth, start=start).output


def trace(
    network: ir.Network,
    module: nn.Module,
    x: torch.Tensor,
    *,
    solver: FixedPoint | None = None,
    depth: int | None = None,
    start: int | None = None,
    carried: dict[str, list[torch.Tensor]] | None = None,
) -> Trace:
    """Run `network` on `x` with the blocks and learnable params of `module`.

    `depth` and `start` default to the module's (`start`: the `k` of the first layer).
    `carried` continues a recurrence (a model's stage after `carry states`): the
    histories of every state, in place of the inits. `L` in a coefficient is `depth`."""
    if network.equilibrium:
        return _Run(network, module, x, solver or FixedPoint()).equilibrium()
    depth = module.depth if depth is None else depth
    start = getattr(module, "start", network.start) if start is None else start
    run = _Run(ir.at_depth(network, depth), module, x, solver or FixedPoint())
    return run.layers(depth, start, carried)


class _Run:
    """One evaluation of a network on one input."""

    def __init__(self, network: ir.Network, module: nn.Module, x: torch.Tensor, solver):
        self.network = network
        self.module = module
        self.input = x
        self.solver = solver
        self.learnable = LearnableParams(network, module)
        self._coefficients: dict[tuple[int, int], Coefficients] = {}

    def coefficients(self, layer: int, k: int) -> Coefficients:
        """The coefficients of the module's layer `layer` (at k), kept for every solver step."""
        if (layer, k) not in self._coefficients:
            self._coefficients[layer, k] = Coefficients(self.network, k, self.learnable.at(layer))
        return self._coefficients[layer, k]

    def block_lookup(self, number: int):
        def instance(name: str) -> nn.Module:
            instances = self.module.blocks[name]
            shared = self.network.block(name).shared or self.network.equilibrium
            return instances[0] if shared else instances[number]

        return instance

    # ------------------------------------------------------------------ inits
    def initial_values(self) -> dict[str, torch.Tensor]:
        """The states before the first layer (language.md 4.2), inits in dependency order
        (the IR lists them so); a state without an init starts as the input."""
        values: dict[str, torch.Tensor] = {}
        layer = self._layer(0, 0, 0, {}, values, {})
        for init in self.network.init:
            space = self.network.space(init.state)
            if not init.form.terms and space != ir.DIM_SPACE:
                values[init.state] = zeros_in(self.input, self.size(space), self.axis)
            else:
                values[init.state] = layer.form(init.form)
        for state in self.network.states:
            values.setdefault(state, self.input)
        return values

    # ------------------------------------------------------------------ layers
    def layers(self, depth: int, start: int, carried) -> Trace:
        if (start != 0 or carried is not None) and _has_sums(self.network):
            raise Unsupported("a sum over history in a network whose first layer is k > 0")
        if carried is None:
            initial = self.initial_values()
            states = {s: [initial[s]] for s in self.network.states}
        else:
            states = {s: list(carried[s]) for s in self.network.states}
            initial = {s: states[s][0] for s in self.network.states}
        local_history: dict[str, list[torch.Tensor]] = {
            s.target: [] for s in self.network.statements if not s.is_state
        }
        offset = len(states[self.network.states[0]]) - 1  # layers before this module's
        for number in range(depth):
            layer = self._layer(
                offset + number, number, start + number, states, initial, local_history
            )
            self._run_statements(layer)
            for state in self.network.states:
                states[state].append(layer.new[state])
            for name, value in layer.locals.items():
                local_history[name].append(value)
        return Trace(states, local_history, states[self.network.output][-1])

    def _layer(self, history, number, k, states, initial, local_history) -> Layer:
        """Layer `number` of the module, at index `history` of the states' histories."""
        return Layer(
            number=history,
            local_number=number,
            coefficients=self.coefficients(number, k),
            states=states,
            initial=initial,
            local_history=local_history,
            block=self.block_lookup(number),
            input=self.input,
            adjoint=self.adjoint_lookup(number),
        )

    @property
    def axis(self) -> int:
        """The channel axis: the one a space's size is counted on."""
        return Layout(self.network.layout).channel_axis

    def size(self, space: str) -> int:
        """The size of a space: the input's channels for dim, the module's `m` for m."""
        return self.input.shape[self.axis] if space == ir.DIM_SPACE else getattr(self.module, space)

    def adjoint_lookup(self, number: int):
        block = self.block_lookup(number)

        def adjoint(name: str, y: torch.Tensor) -> torch.Tensor:
            source = self.network.block(name).source_space
            return vjp_adjoint(block(name), y, self.size(source), self.axis)

        return adjoint

    def _run_statements(self, layer: Layer) -> None:
        for stmt in self.network.statements:
            if not stmt.is_state:
                layer.locals[stmt.target] = layer.form(stmt.form)
            elif _is_implicit(stmt):
                layer.new[stmt.target] = self._solve_statement(layer, stmt)
            else:
                layer.new[stmt.target] = layer.form(stmt.form)

    def _solve_statement(self, layer: Layer, stmt: ir.Assign) -> torch.Tensor:
        """z = form(z) for z = the statement's next iterate (language.md 6.2), from x_k."""
        target = stmt.target
        layer.unknowns = frozenset({target})

        def statement_map(z: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            layer.new[target] = z[target]
            return {target: layer.form(stmt.form)}

        try:
            start = {target: layer.states[target][layer.number]}
            return self.solver.solve(statement_map, start)[target]
        finally:
            layer.unknowns = frozenset()

    # ------------------------------------------------------------------ equilibrium
    def equilibrium(self) -> Trace:
        """The fixed point of the whole update (language.md 6.3), from the inits.

        The update maps every iterate and its lag slots; at its fixed point every slot
        holds the same value, so the reference solves the update with every lag of a state
        reading the one unknown iterate of that state: the same fixed point."""
        initial = self.initial_values()

        def update(z: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            states = {s: [z[s]] for s in self.network.states}
            layer = self._layer(0, 0, 0, states, initial, {})
            self._run_statements(layer)
            return dict(layer.new)

        solution = self.solver.solve(update, dict(initial))
        states = {s: [initial[s], solution[s]] for s in self.network.states}
        return Trace(states, {}, solution[self.network.output])


def _is_implicit(stmt: ir.Assign) -> bool:
    """A block (or map) applied to the iterate the statement itself defines."""
    return any(
        isinstance(atom, ir.StateAt) and atom.name == stmt.target and atom.lag == 1
        for atom in stmt.form.walk()
    )


def _has_sums(network: ir.Network) -> bool:
    return any(
        isinstance(atom, ir.HistorySum) for stmt in network.statements for atom in stmt.form.walk()
    )
