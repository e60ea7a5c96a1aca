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
