"""Training one image classifier for one seed: the same optimizer, schedule, augmentation
and data order for every network, on any number of ranks."""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass

from .distributed import World, all_sum, convert_batchnorm, data_parallel, rank_batches
from .image_data import ImageData, augment, epoch_shifts
from .settings import ImageSettings

# Evaluation batch: any size gives the same numbers (eval mode is per image).
EVAL_BATCH = 250


@dataclass(frozen=True)
class Runtime:
    """How a run is executed, not what it computes (bf16, which changes the numbers, is a
    setting: `ImageSettings.bf16`). Each finished seed records it."""

    device: str = "auto"  # auto (CUDA when there is one), cpu or cuda
    channels_last: bool = False  # the model and every batch in torch.channels_last
    compile: bool = False  # the training forward through torch.compile


def autocast(s: ImageSettings, world: World):
    """bf16 autocast on the run's device when `s.bf16`, else nothing."""
    import torch

    if not s.bf16:
        return nullcontext()
    return torch.autocast(world.device.split(":")[0], dtype=torch.bfloat16)


def schedule(s: ImageSettings):
    """The learning-rate factor of each step: linear warm-up, then cosine to zero."""
    warmup = max(1, round(s.warmup * s.steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, s.steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def build(cls: type, seed: int, world: World, channels: int = 1, classes: int = 10):
    """The model of `seed`, the same on every rank (DDP would broadcast rank 0's anyway),
    with its BatchNorm layers taking global-batch statistics."""
    import torch

    torch.manual_seed(seed)
    model = convert_batchnorm(cls(num_classes=classes, in_chans=channels))
    return model.to(world.device)


def train_seed(
    cls: type,
    s: ImageSettings,
    data: ImageData,
    seed: int,
    world: World,
    bar=None,
    runtime: Runtime = Runtime(),
):
    """Train on the split, evaluate on the test set; the run's entry of the report."""
    import torch
    import torch.nn.functional as F

    start = time.perf_counter()
    model = build(cls, seed, world, data.channels, data.classes)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    ddp = data_parallel(model, world)
    forward = torch.compile(ddp) if runtime.compile else ddp
    optimizer = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule(s))
    normalise = _normaliser(data, next(model.parameters()).dtype, runtime)
    curve: list[float] = []
    model.train()
    for epoch in range(s.epochs):
        shifts = epoch_shifts(s, seed, epoch)
        for index in rank_batches(world, s.n_train, s.batch, seed, epoch):
            index = torch.tensor(index)
            images = augment(data.train_x[index], shifts[index], s.shift)
            images, labels = normalise(images).to(world.device), data.train_y[index]
            # The mean over this rank's share; DDP averages the gradients over the ranks,
            # which makes it the mean over the global batch, as on one rank.
            with autocast(s, world):
                logits = forward(images)
            loss = F.cross_entropy(_at_least_float32(logits), labels.to(world.device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            lr_schedule.step()
            curve.append(all_sum(loss.detach()).item() / world.size)
            if bar is not None:
                bar.update(1)
    error, test_loss = evaluate(model, data, world, normalise, s)
    weight_norm = torch.sqrt(sum(p.detach().double().square().sum() for p in model.parameters()))
    return {
        "test_error": error,
        "test_loss": test_loss,
        "final_train_loss": curve[-1] if curve else math.nan,
        "weight_norm": weight_norm.item(),
        "curve": curve,
        "wall_time_s": time.perf_counter() - start,
        "world_size": world.size,
        "runtime": {
            "device": world.device,
            "device_name": _device_name(world.device),
            "channels_last": runtime.channels_last,
            "compile": runtime.compile,
            "torch": torch.__version__,
        },
    }


def _device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    import platform

    return platform.processor() or platform.machine() or "cpu"


def evaluate(
    model, data: ImageData, world: World, normalise, s: ImageSettings | None = None
) -> tuple[float, float]:
    """(test error, mean test loss): each rank takes every world.size-th test image and
    the counts are summed, so the numbers do not depend on the world size."""
    import torch
    import torch.nn.functional as F

    model.eval()
    mine = torch.arange(world.rank, len(data.test_y), world.size)
    wrong = torch.zeros((), dtype=torch.float64, device=world.device)
    loss = torch.zeros((), dtype=torch.float64, device=world.device)
    with torch.no_grad():
        for chunk in mine.split(EVAL_BATCH):
            images = normalise(data.test_x[chunk]).to(world.device)
            labels = data.test_y[chunk].to(world.device)
            with autocast(s, world) if s is not None else nullcontext():
                logits = _at_least_float32(model(images))
            wrong += (logits.argmax(1) != labels).sum()
            loss += F.cross_entropy(logits, labels, reduction="sum").double()
    n = len(data.test_y)
    return all_sum(wrong).item() / n, all_sum(loss).item() / n


def _at_least_float32(logits):
    """bf16 logits (under --bf16) in float32 for the loss; float32 and float64 as they are."""
    import torch

    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def _normaliser(data: ImageData, dtype, runtime: Runtime = Runtime()):
    """Normalised images in the model's dtype: float32 as the data is, or float64 when the
    model was built under `torch.set_default_dtype(torch.float64)` (the test that compares
    a run on 2 ranks with one on 1 runs so: see tests/test_experiments_images.py)."""
    import torch

    def normalise(images):
        images = (images.to(dtype) - data.mean) / data.std
        if runtime.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    return normalise
