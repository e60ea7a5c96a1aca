"""Training: the same wrapper, optimizer, schedule and seeds for every network."""

from __future__ import annotations

import math
import statistics
import time

from .networks import NetworkSource
from .settings import Settings
from .stats import summarize


def wrap(cls, s: Settings, in_features: int, out_features: int):
    """Linear lift -> generated module -> linear read-out."""
    import torch

    return torch.nn.Sequential(
        torch.nn.Linear(in_features, s.dim),
        cls(s.dim, depth=s.depth),
        torch.nn.Linear(s.dim, out_features),
    )


def train_one(cls, s: Settings, data, seed: int, progress=None) -> dict:
    import torch
    import torch.nn.functional as F

    x_train, y_train, x_test, y_test = data
    torch.manual_seed(seed)
    model = wrap(cls, s, x_train.shape[1], 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=s.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=s.steps)
    g = torch.Generator().manual_seed(seed)
    classify = s.experiment != "telgarsky"
    loss_fn = F.binary_cross_entropy_with_logits if classify else F.mse_loss
    curve = []
    for _ in range(s.steps):
        index = torch.randint(0, x_train.shape[0], (s.batch,), generator=g)
        optimizer.zero_grad()
        loss = loss_fn(model(x_train[index]), y_train[index])
        loss.backward()
        optimizer.step()
        schedule.step()
        curve.append(loss.item())
        if progress is not None:
            progress.update(1)
    model.eval()
    with torch.no_grad():
        out = model(x_test)
        metrics = {"test_loss": loss_fn(out, y_test).item()}
        if classify:
            metrics["test_accuracy"] = ((out > 0).float() == y_test).float().mean().item()
        if s.experiment == "rings":
            signed = (2 * y_test - 1) * out
            metrics["margin"] = signed.min().item()
        if s.experiment == "telgarsky":
            metrics["test_mse"] = metrics["test_loss"]
    return {"metrics": metrics, "curve": curve, "model": model}


def train_network(
    cls, source: NetworkSource, s: Settings, data, data_digest: str, progress=None
) -> tuple[dict, object]:
    """One network over every seed: its report entry and the model of seed 0 (for the plot)."""
    runs, start = [], time.perf_counter()
    for seed in range(s.seeds):
        runs.append(train_one(cls, s, data, seed, progress))
    wall = time.perf_counter() - start
    keys = runs[0]["metrics"].keys()
    certificate = source.certificate
    universal = certificate.get("universal") or {}
    entry = {
        "source": str(source.path),
        "class": source.class_name,
        "certificate": {
            "zero_stable": certificate.get("zero_stable"),
            "consistent": certificate.get("consistent"),
            "step": certificate.get("step"),
            "universal": universal.get("guaranteed"),
            "reasons": universal.get("reasons", []),
        },
        "metrics": {k: summarize([r["metrics"][k] for r in runs]) for k in keys},
        "curves": [[v if math.isfinite(v) else None for v in thin(r["curve"])] for r in runs],
        "data_digest": data_digest,
        "wall_time_s": wall,
    }
    return entry, runs[0]["model"]


def thin(curve: list[float], points: int = 100) -> list[float]:
    """The training curve, averaged into at most `points` values."""
    if len(curve) <= points:
        return curve
    size = len(curve) / points
    return [statistics.fmean(curve[int(i * size) : int((i + 1) * size)]) for i in range(points)]
