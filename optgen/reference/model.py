"""The reference semantics of a model (language.md section 9): stem, stages, transitions
and head, each stage evaluated by the network interpreter.

The stem, the transitions and the head are torch modules of the compiled model
(`module.stem`, `module.transitions[i]`, `module.head`), called as black boxes like
blocks; the stages' blocks and params are read from `module.stages[i]`. What the reference
defines is how they connect:

- stage 0 runs on the stem's output, from its inits, at k = 0;
- `carry output`: the next stage runs on the transition of the output state, from its
  inits, at k = 0;
- `carry states`: every iterate of every state (x_0, ..., x_k: what its lags and x[0]
  read) goes through the transition, and the next stage continues the recurrence at the
  k after the last one; its locals' history starts again;
- the head takes the last stage's output state.

A transition's BatchNorm in training mode normalizes over the batch of values carried
together, an implementation choice (the compiled model carries its live slots in one
batch); the reference maps each iterate alone, so it is the model's meaning in `eval()`
mode, where a transition acts on each sample alone.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from .. import ir
from .network import trace
from .scalars import Unsupported
from .solve import FixedPoint


def evaluate_model(
    model: ir.Model,
    networks: Iterable[ir.Network],
    module: nn.Module,
    image: torch.Tensor,
    *,
    solver: FixedPoint | None = None,
) -> torch.Tensor:
    """What `module(image)` should return: class scores, or features with `head none`."""
    by_name = {network.name: network for network in networks}
    features = module.stem(image)
    histories = None  # the carried iterates, under `carry states`
    k = 0  # the k of the stage's first layer
    for index, stage in enumerate(model.stages):
        network = by_name[stage.network]
        if histories is not None and _reads_input(network):
            raise Unsupported(f"`input` in stage {index}, which continues the recurrence")
        run = trace(
            network,
            module.stages[index],
            features,
            solver=solver,
            depth=1 if network.equilibrium else stage.depth,
            start=k,
            carried=histories,
        )
        if index == len(model.stages) - 1:
            return module.head(run.output)
        transition = module.transitions[index]
        carry = model.transitions[index].carry
        if carry == ir.Carry.STATES and not network.equilibrium:
            histories = {
                state: [transition(value) for value in values]
                for state, values in run.states.items()
            }
            features = histories[network.output][-1]
            k += stage.depth
        else:
            histories, k = None, 0
            features = transition(run.output)
    raise Unsupported(f"model {model.name} has no stage")


def _reads_input(network: ir.Network) -> bool:
    return any(
        isinstance(atom, ir.InputValue) for stmt in network.statements for atom in stmt.form.walk()
    )
