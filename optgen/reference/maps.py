"""The fixed elementwise maps of the language (language.md sections 5 and 5.2), written
from their mathematical definitions:

    relu(e)              max(e, 0)
    sigmoid(e)           1 / (1 + exp(-e))
    tanh(e)              tanh(e)
    softshrink(e, lam)   e - lam where e > lam, e + lam where e < -lam, 0 elsewhere
    clamp(e, lo, hi)     min(max(e, lo), hi)

The scalar arguments are floats or tensors (a learnable threshold, a per-channel one
already shaped to broadcast against `e`).
"""

from __future__ import annotations

import torch


def _as_tensor(value, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(value, dtype=like.dtype, device=like.device)


def relu(e: torch.Tensor) -> torch.Tensor:
    return torch.where(e > 0, e, torch.zeros_like(e))


def sigmoid(e: torch.Tensor) -> torch.Tensor:
    # 1 / (1 + exp(-e)), by torch's kernel: the formula's exp(-e) overflows for e < -709
    # and its gradient is then inf/inf.
    return torch.sigmoid(e)


def tanh(e: torch.Tensor) -> torch.Tensor:
    return torch.tanh(e)


def softshrink(e: torch.Tensor, lam) -> torch.Tensor:
    lam = _as_tensor(lam, e)
    return torch.where(e > lam, e - lam, torch.where(e < -lam, e + lam, torch.zeros_like(e)))


def clamp(e: torch.Tensor, lo, hi) -> torch.Tensor:
    return torch.minimum(torch.maximum(e, _as_tensor(lo, e)), _as_tensor(hi, e))


MAPS = {
    "relu": relu,
    "sigmoid": sigmoid,
    "tanh": tanh,
    "softshrink": softshrink,
    "clamp": clamp,
}


def zeros_in(like: torch.Tensor, size: int, axis: int) -> torch.Tensor:
    """Zeros shaped as `like` but for `size` entries on the channel axis: a state of
    another space before its first layer (`init y = 0` of `state y: m`)."""
    shape = list(like.shape)
    shape[axis] = size
    return like.new_zeros(shape)


def vjp_adjoint(block, y: torch.Tensor, size: int, axis: int) -> torch.Tensor:
    """K^T(y) of a linear block K, as the vector-Jacobian product of K with y (at zero):
    the adjoint from its definition, whatever weight the module's code reads."""
    outer = torch.is_grad_enabled()
    with torch.enable_grad():
        z = zeros_in(y, size, axis).requires_grad_()
        (vjp,) = torch.autograd.grad(block(z), z, y, create_graph=outer)
    return vjp
