"""Scalar coefficients of the IR at one layer: sympy expressions made into numbers or tensors.

A coefficient of the IR is a sympy expression in the layer index `k` (`ir.K`), the params
(as `ir.param_symbol` symbols), a sum's index, and recursive schedules (`tk[k + 1]`, the
functions of `optgen.schedules`, which evaluate themselves at an integer). At layer k the
reference replaces `k` and every fixed param by its exact value, so that whatever is left
is either a plain number, computed by sympy to 30 digits and rounded once to float64, or
an expression in learnable params, computed with torch from their tensors (so that it
carries their gradient).
"""

from __future__ import annotations

import sympy
import torch

from .. import ir

# Digits sympy keeps while it evaluates a constant coefficient, before the one rounding to
# float64 (float64 holds 17): the reference is then at least as exact as any lowering.
DIGITS = 30


class Unsupported(NotImplementedError):
    """A construct the reference does not evaluate (the message says which)."""


def fixed_param_values(network: ir.Network, k: int) -> dict[sympy.Symbol, sympy.Expr]:
    """Each fixed param's exact value at layer k (a schedule's at k, a constant's anywhere)."""
    at_k = {ir.K: sympy.Integer(k)}
    return {p.symbol: p.value.xreplace(at_k) for p in network.params if not p.learnable}


class Coefficients:
    """The coefficients of one layer: `value(expr)` with `k`, fixed params and (optionally)
    a sum index replaced, learnable params read from `learnable` (symbol -> tensor).

    Values are memoized per layer: a solve evaluates the same statement many times."""

    def __init__(self, network: ir.Network, k: int, learnable: dict[sympy.Symbol, torch.Tensor]):
        self.exact = {ir.K: sympy.Integer(k), **fixed_param_values(network, k)}
        self.learnable = learnable
        self._memo: dict = {}

    def value(self, expr: sympy.Expr, index: tuple[sympy.Symbol, int] | None = None):
        """`expr` at this layer (and at sum index `index = (var, i)`): a float or a tensor."""
        key = (expr, index)
        if key not in self._memo:
            bindings = dict(self.exact)
            if index is not None:
                bindings[index[0]] = sympy.Integer(index[1])
            self._memo[key] = _evaluate(sympy.sympify(expr).xreplace(bindings), self.learnable)
        return self._memo[key]

    def per_sample(self, expr: sympy.Expr, tensors: dict[sympy.Symbol, torch.Tensor]):
        """`expr` at this layer with some symbols bound to per-sample tensors (the
        reductions of a data-scaled term, language.md 5.6)."""
        return _evaluate(sympy.sympify(expr).xreplace(self.exact), {**self.learnable, **tensors})


def _evaluate(expr: sympy.Expr, learnable: dict[sympy.Symbol, torch.Tensor]):
    """A float when `expr` is constant, else a tensor built from the learnable params."""
    if not expr.free_symbols:
        number = sympy.N(expr, DIGITS)
        if not number.is_real or not number.is_finite:
            raise ValueError(f"coefficient {expr} is not a finite real number")
        return float(number)
    if expr.is_Symbol:
        if expr not in learnable:
            raise Unsupported(f"no value for symbol {expr} in a coefficient")
        return learnable[expr]
    if expr.is_Add:
        return _fold(expr.args, learnable, lambda a, b: a + b)
    if expr.is_Mul:
        return _fold(expr.args, learnable, lambda a, b: a * b)
    if expr.is_Pow:
        base = _evaluate(expr.base, learnable)
        exponent = _evaluate(expr.exp, learnable)
        if isinstance(exponent, float) and exponent.is_integer():
            exponent = int(exponent)  # t^2, t^-1: an integer power keeps negative bases real
        return base**exponent
    # Functions of fixed arguments are numbers by now (language.md 5.4); those left read a
    # per-sample reduction (5.6).
    if isinstance(expr, (sympy.Max, sympy.Min)):
        pick = torch.maximum if isinstance(expr, sympy.Max) else torch.minimum
        values = [_evaluate(a, learnable) for a in expr.args]
        tensor = next(v for v in values if isinstance(v, torch.Tensor))
        result = tensor
        for v in values:
            result = pick(result, torch.as_tensor(v, dtype=tensor.dtype, device=tensor.device))
        return result
    functions = {sympy.Abs: torch.abs, sympy.exp: torch.exp, sympy.log: torch.log}
    functions[sympy.sign] = torch.sign
    functions.update({sympy.cos: torch.cos, sympy.sin: torch.sin})
    if type(expr) in functions:
        return functions[type(expr)](_evaluate(expr.args[0], learnable))
    raise Unsupported(f"coefficient {expr} of learnable params: {type(expr).__name__}")


def _fold(args, learnable, combine):
    result = None
    for arg in args:
        value = _evaluate(arg, learnable)
        result = value if result is None else combine(result, value)
    return result
