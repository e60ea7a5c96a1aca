"""What a network's output depends on: the block instances and params it reaches.

A block instance or learnable param outside the reach gets no gradient; the pipeline
warns of it, and a generated module lists its parameters for DDP.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy

from .. import ir
from ..errors import Diagnostic, Severity


@dataclass(frozen=True)
class Reach:
    """What the network's output depends on over a number of unrolled layers."""

    blocks: frozenset[tuple[str, int]]  # block instances (name, layer)
    params: frozenset[str]  # params (learnable or not) in a coefficient on the way


def reaching_output(net: ir.Network, depth: int) -> Reach:
    """The block instances and params the output of a `depth`-layer network depends on.

    A backward liveness walk over the unrolled layers: start from the output state after
    the last layer and follow what each needed value is computed from (states at any
    lag, `x[0]` and the init rules, locals, sum histories, block arguments). A block
    instance or learnable param outside the result gets no gradient: G in linearized
    ADMM in the last layer when x is the output, or everything that only feeds a state
    the output never reads. An equilibrium is one map solved to a fixed point, with one
    instance of each block: every state it reads is the fixed point itself.
    """
    defs = {(st.target, st.is_state): st.form for st in net.statements}
    inits = {init.state: init.form for init in net.init}
    symbols = {p.symbol: p.name for p in net.params}
    if net.equilibrium:
        depth = 1
    blocks: set[tuple[str, int]] = set()
    params: set[str] = set()
    needed: set[tuple[str, bool, int]] = set()  # (name, is_state, index)
    work: list[tuple[str, bool, int]] = []

    def need(name: str, is_state: bool, index: int) -> None:
        # A state at index j is its value after layer j - 1, index 0 its initial value
        # (which lags reaching before the first layer read too).
        if is_state:
            index = 1 if net.equilibrium else max(index, 0)
        if (name, is_state, index) not in needed:
            needed.add((name, is_state, index))
            work.append((name, is_state, index))

    def visit(form: ir.LinearForm, layer: int, history_index: int = 0) -> None:
        for atom, coef in form.terms:
            params.update(symbols[s] for s in coef.free_symbols if s in symbols)
            if isinstance(atom, ir.StateAt):
                need(atom.name, True, layer + atom.lag)
            elif isinstance(atom, ir.Initial):
                need(atom.name, True, 0)
            elif isinstance(atom, ir.Local):
                need(atom.name, False, max(layer + atom.lag, 0))
            elif isinstance(atom, ir.History):
                need(atom.name, atom.is_state, history_index + atom.offset)
            elif isinstance(atom, ir.BlockOut):
                blocks.add((atom.block, layer))
                visit(atom.arg, layer, history_index)
            elif isinstance(atom, ir.MapOut):
                # A learnable threshold or bound reaches the output through the map.
                for scalar in atom.scalars:
                    free = sympy.sympify(scalar).free_symbols
                    params.update(symbols[s] for s in free if s in symbols)
                visit(atom.arg, layer, history_index)
            elif isinstance(atom, ir.DataScaled):
                # The reductions reach the output through the scale they compute.
                params.update(symbols[s] for s in atom.factor.free_symbols if s in symbols)
                for inner in ir.inner_forms(atom):
                    visit(inner, layer, history_index)
            elif isinstance(atom, ir.HistorySum):
                for i in range(atom.first_term(layer), layer + 1):
                    visit(atom.body, layer, i)

    need(net.output, True, depth)
    while work:
        name, is_state, index = work.pop()
        if is_state and index == 0 and not net.equilibrium:
            if name in inits:
                visit(inits[name], 0)
            continue
        # A state's value at index j comes from layer j - 1; a local's at index j from layer j.
        layer = index - 1 if is_state else index
        if 0 <= layer < depth and (name, is_state) in defs:
            visit(defs[(name, is_state)], layer)
    return Reach(frozenset(blocks), frozenset(params))


REACH_CHECKED_LAYERS = 256  # deeper networks are not walked (the walk grows with depth)


def _layers_text(layers: list[int]) -> str:
    shown = ", ".join(f"k={k}" for k in layers[:3])
    return shown + (f" and {len(layers) - 3} more" if len(layers) > 3 else "")


def unreached_warnings(networks) -> list[Diagnostic]:
    """Blocks and learnable params that never reach the output get no gradient, and DDP
    stops at its second step unless `find_unused_parameters=True`: name them."""
    found = []
    for net in networks:
        if net.depth > REACH_CHECKED_LAYERS:
            continue
        reach = reaching_output(net, net.depth)
        layers = 1 if net.equilibrium else net.depth
        for block in net.blocks:
            reached = {k for name, k in reach.blocks if name == block.name}
            missed = (
                []
                if (block.shared and reached)
                else [k for k in range(1 if block.shared else layers) if k not in reached]
            )
            if missed:
                where = (
                    "" if block.shared or net.equilibrium else f" at layer {_layers_text(missed)}"
                )
                found.append(
                    Diagnostic(
                        Severity.WARNING,
                        block.span,
                        f"block {block.name} of network {net.name}{where} never reaches the"
                        " output: its parameters get no gradient",
                        "DistributedDataParallel needs find_unused_parameters=True for it",
                    )
                )
        for p in net.params:
            if p.learnable and p.name not in reach.params:
                found.append(
                    Diagnostic(
                        Severity.WARNING,
                        p.span,
                        f"learnable param {p.name} of network {net.name} never reaches the"
                        " output: it gets no gradient",
                        "DistributedDataParallel needs find_unused_parameters=True for it",
                    )
                )
    return found
