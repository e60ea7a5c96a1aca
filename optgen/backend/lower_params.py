"""The learnable params of a network: the `nn.Parameter` each one gets, its start value
(the inverse of its reparametrization), the op computing its value in forward, and the
`_Learnable(...)` spec of `params()`; and the values of the fixed params `params()` lists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import sympy

from .. import ir
from ..kinds.blocks import Layout
from ..naming import Namespace
from ..present import float_literal
from . import plan
from .lower_scope import pyexpr


@dataclass
class ParamPlan:
    name: str
    attr: str  # the nn.Parameter attribute
    var: str  # the forward-local variable holding the constrained value
    init_code: str  # python expression building the raw initial tensor in __init__
    doc: str
    needs_math: bool = False
    spec: str = ""  # the `_Learnable(...)` of params() and set_params()


def _inverse_softplus(value: float) -> float:
    """log(expm1(v)); past 700, expm1 overflows and the form without it is exact."""
    return math.log(math.expm1(value)) if value < 700 else value + math.log(-math.expm1(-value))


def param_plans(
    net: ir.Network, param_var: dict[str, str], attrs: Namespace
) -> tuple[list[ParamPlan], list[plan.Op]]:
    """The plan of each learnable param, and the ops computing its value in forward."""
    plans = []
    values: list[plan.Op] = []
    for p in net.params:
        if not p.learnable:
            continue
        var = param_var[p.name]
        constrained = p.bound is not None
        attr = attrs.create(f"{p.name}_raw" if constrained else p.name)
        raw, needs_math = _raw_code(p)
        # The start in float64 (exact after .double()); a scalar with shape [1], not
        # 0-dim: FSDP2's fully_shard shards 1-D parameters only.
        # A per-channel param starts with the same value in each of the `dim` channels.
        start = f"[{raw}] * dim" if p.per_channel else f"[{raw}]"
        if p.per_layer:
            each = start if p.per_channel else raw
            if p.depends_on_k:
                layers = "range(start, start + depth)"
                init = f"_start(self, {attr!r}, [{each} for k in {layers}])"
            else:  # one start value, computed here, for every layer
                init = f"_start(self, {attr!r}, [{each} for _ in range(depth)])"
        else:
            init = f"_start(self, {attr!r}, {start})"
        how, lo, hi = _reparametrization(p)
        spec = _learnable_spec(p, attr, how, lo, hi)
        plans.append(ParamPlan(p.name, attr, var, init, _param_doc(p), needs_math, spec))
        spatial = _spatial_axes(net) if p.per_channel else 0
        values.append(plan.ParamValue(var, attr, how, lo, hi, spatial))
    return plans, values


def _spatial_axes(net: ir.Network) -> int:
    """The axes after the channel axis of the layout, which a per-channel value
    broadcasts along: H and W of [N, dim, H, W]; none where channels come last."""
    return 2 if Layout(net.layout) is Layout.IMAGE else 0


def _learnable_spec(p: ir.Param, attr: str, how, lo: float, hi: float) -> str:
    """The `_Learnable(...)` describing the param to `params()` and `set_params()`."""
    kind = {
        plan.Reparametrization.IDENTITY: "identity",
        plan.Reparametrization.SOFTPLUS: "softplus",
    }.get(how, "sigmoid")
    upper = None if kind != "sigmoid" else hi
    declared = p.bound.show(p.name) if p.bound else "unconstrained"
    per_channel = ", per_channel=True" if p.per_channel else ""
    return (
        f"_Learnable({attr!r}, {kind!r}, {lo!r}, {upper!r}, {p.per_layer!r}, {declared!r}"
        f"{per_channel})"
    )


def fixed_param_values(net: ir.Network) -> list[tuple[str, str]]:
    """(name, Python expression) of each fixed param: a float, or a list over the layers."""
    found = []
    for p in net.params:
        if p.learnable:
            continue
        value = sympy.sympify(p.value)
        if value.free_symbols - {ir.K}:
            continue  # given by other params: params() lists the ones the rule names
        if p.depends_on_k:
            found.append(
                (
                    p.name,
                    f"[float({pyexpr(value, {ir.K: 'k'})}) for k in range(start, start + depth)]",
                )
            )
        else:
            found.append((p.name, float_literal(value)))
    return found


def _raw_code(p: ir.Param) -> tuple[str, bool]:
    """The raw parameter's start value (the inverse of its reparametrization)."""
    b = p.bound
    if p.per_layer and p.depends_on_k:
        v = f"float({pyexpr(p.value, {ir.K: 'k'})})"
        if b is None:
            return v, False
        if b.hi is None:  # positive: inverse softplus, log(expm1(v)) without overflow
            return f"{v} + math.log(-math.expm1(-{v}))", True
        lo, hi = float(b.lo), float(b.hi)
        return f"math.log(({v} - {lo!r}) / ({hi!r} - {v}))", True
    value = float(p.value)
    if b is None:
        return float_literal(value), False
    if b.hi is None:
        return float_literal(_inverse_softplus(value)), False
    lo, hi = float(b.lo), float(b.hi)
    return float_literal(math.log((value - lo) / (hi - value))), False


def _reparametrization(p: ir.Param) -> tuple[plan.Reparametrization, float, float]:
    how = plan.Reparametrization
    b = p.bound
    if b is None:
        return how.IDENTITY, 0.0, 1.0
    if b.hi is None:
        return how.SOFTPLUS, 0.0, 1.0
    lo, hi = float(b.lo), float(b.hi)
    if lo == 0.0 and hi == 1.0:
        return how.SIGMOID, lo, hi
    return how.SCALED_SIGMOID, lo, hi


def _param_doc(p: ir.Param) -> str:
    where = p.bound.show(p.name) if p.bound else "unconstrained"
    how = "softplus" if p.positive else ("scaled sigmoid" if p.bound else "identity")
    per = ", one per layer" if p.per_layer else ""
    per += ", one per channel" if p.per_channel else ""
    return f"{p.name}: learnable{per}, {where} ({how} reparametrization), starts at {p.value}"
