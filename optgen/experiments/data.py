"""The three data sets (rings, parity, Telgarsky's sawtooth) and their digest."""

from __future__ import annotations

import hashlib
import math

from .settings import Settings


def make_data(s: Settings):
    """(x_train, y_train, x_test, y_test), the same for every network of a run."""
    import torch

    g = torch.Generator().manual_seed(s.data_seed)
    if s.experiment == "rings":

        def sample(n):
            ring = torch.randint(0, s.rings, (n,), generator=g)
            angle = 2 * math.pi * torch.rand(n, generator=g)
            radius = 1.0 + ring.float() + 0.08 * torch.randn(n, generator=g)
            x = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1) / s.rings
            return x, (ring % 2).float().unsqueeze(1)

    elif s.experiment == "parity":

        def sample(n):
            x = 2 * torch.rand(n, s.parity_bits, generator=g) - 1
            y = ((x < 0).sum(dim=1) % 2).float().unsqueeze(1)
            return x, y

    else:

        def sample(n, grid=False):
            x = torch.linspace(0, 1, n).unsqueeze(1) if grid else torch.rand(n, 1, generator=g)
            return x, sawtooth(x, s.tent_compositions)

    x_train, y_train = sample(s.n_train)
    x_test, y_test = (
        sample(s.n_test, grid=True) if s.experiment == "telgarsky" else sample(s.n_test)
    )
    return x_train, y_train, x_test, y_test


def sawtooth(x, m: int):
    """The tent map composed m times on [0, 1] (2^(m-1) teeth)."""
    for _ in range(m):
        x = 1 - (2 * x - 1).abs()
    return x


def digest(*tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().contiguous().numpy().tobytes())
    return h.hexdigest()
