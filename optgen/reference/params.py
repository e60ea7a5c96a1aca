"""Learnable params as the rule reads them: the module's raw parameter, reparametrized.

The compiled module is only the *store* of the learnable values: the reference reads its raw
`nn.Parameter` and applies the reparametrization that language.md (section 4.3) defines
for the declared constraint, from the IR, not the module's own code:

    learnable                 the tensor itself
    learnable positive        softplus(raw)
    learnable in (lo, hi)     lo + (hi - lo) * sigmoid(raw)   (any brackets)

A scalar is stored with shape [1] and read as its element (section 10), a `per_layer`
param has one row per layer of the module, and a `per_channel` one is broadcast along the
channel axis of the block layout: the last axis of `[..., dim]` and `[N, L, dim]`,
dimension 1 of `[N, dim, H, W]` (section 4.3.1).
"""

from __future__ import annotations

import sympy
import torch
import torch.nn.functional as F
from torch import nn

from .. import ir


def raw_parameter(module: nn.Module, param: ir.Param) -> torch.Tensor:
    """The module's raw `nn.Parameter` of a learnable param.

    Its attribute is `module.<name>`, or `module.<name>_raw` when constrained; a name that
    Python or the generated code already uses is renamed there (`lambda` -> `lambda_`), and
    the class attribute `LEARNABLE_PARAMS` says where each one went."""
    table = getattr(type(module), "LEARNABLE_PARAMS", {}) or {}
    spec = table.get(param.name)
    if spec is not None:
        return getattr(module, spec.attr)
    constrained = param.positive or param.bound is not None
    return getattr(module, f"{param.name}_raw" if constrained else param.name)


def constrained_value(param: ir.Param, raw: torch.Tensor) -> torch.Tensor:
    """The value the rule uses, from the raw parameter (the documented reparametrization)."""
    if param.positive:
        return F.softplus(raw)
    if param.bound is not None:
        lo, hi = float(param.bound.lo), float(param.bound.hi)
        return lo + (hi - lo) * torch.sigmoid(raw)
    return raw


def channel_shape(layout: str, dim: int) -> tuple[int, ...]:
    """How a `[dim]` value broadcasts against a tensor of `layout`."""
    return (dim, 1, 1) if str(layout) == "image" else (dim,)


class LearnableParams:
    """The learnable params of one network in one module; `at(layer)` gives, for the
    module's layer number `layer` (0 for its first), each param's symbol and value."""

    def __init__(self, network: ir.Network, module: nn.Module):
        self.layout = network.layout
        self.values = {
            p: constrained_value(p, raw_parameter(module, p)) for p in network.params if p.learnable
        }

    def at(self, layer: int) -> dict[sympy.Symbol, torch.Tensor]:
        return {p.symbol: self._entry(p, value, layer) for p, value in self.values.items()}

    def _entry(self, param: ir.Param, value: torch.Tensor, layer: int) -> torch.Tensor:
        if param.per_layer:
            value = value[layer]
        elif not param.per_channel:
            value = value.reshape(())  # stored [1] for FSDP2, read as its element
        if param.per_channel:
            value = value.reshape(channel_shape(self.layout, value.shape[-1]))
        return value
