"""Data-parallel training with torch.distributed, and the pieces that make a run on N ranks
give the metrics of a run on one.

A run started by `torchrun` (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT in
the environment) joins a process group: gloo on CPU, NCCL when CUDA is present. A plain
`optgen experiment` is a world of one, without a process group, and takes the same code
path. Three things would otherwise depend on the number of ranks:

- BatchNorm: per-rank batch statistics differ from the global batch's.
  `nn.SyncBatchNorm` refuses CPU tensors (torch 2.13: "SyncBatchNorm expected input
  tensor to be on GPU"), so `GlobalBatchNorm2d` all-reduces the sums itself, with
  autograd through the all-reduce, and is used on every world size (one rank included);
- the data order: `DistributedSampler` shards one seeded permutation, and the rank's batch
  is a contiguous run of its shard, so that the ranks' batches of a step make up exactly
  the global batch of a one-rank run;
- the augmentation: drawn per image and epoch (`image_data.epoch_shifts`), not per rank.
"""

from __future__ import annotations

import datetime
import functools
import os
from dataclasses import dataclass

# A rank that waits longer than this for the others gives up instead of hanging forever.
TIMEOUT = datetime.timedelta(seconds=120)


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    device: str = "cpu"
    backend: str | None = None  # None: a single process, no process group

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def use_cuda(device: str = "auto") -> bool:
    """Whether to train on CUDA: `device` "auto" (when there is a CUDA device), "cuda" (a
    `ValueError` when there is none) or "cpu"."""
    import torch

    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"--device {device}: give auto, cpu or cuda")
    available = torch.cuda.is_available()
    if device == "cuda" and not available:
        raise ValueError(
            "--device cuda: torch sees no CUDA device (torch.cuda.is_available() is False;"
            f" torch {torch.__version__}, built with CUDA {torch.version.cuda})"
        )
    return available if device == "auto" else device == "cuda"


def join(device: str = "auto") -> World:
    """The process group of a torchrun launch, or a world of one; on CUDA (NCCL between
    the ranks, each on cuda:LOCAL_RANK) or on the CPU (gloo), as `use_cuda(device)` says."""
    import torch

    cuda = use_cuda(device)
    if "WORLD_SIZE" not in os.environ:
        return World(device="cuda" if cuda else "cpu")
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        backend, device = "nccl", f"cuda:{local_rank}"
        torch.cuda.set_device(local_rank)
    else:
        backend, device = "gloo", "cpu"
    dist.init_process_group(backend=backend, timeout=TIMEOUT)
    return World(dist.get_rank(), dist.get_world_size(), local_rank, device, backend)


def leave(world: World) -> None:
    if world.backend is not None:
        import torch.distributed as dist

        # Every rank reaches this point before the group goes away: a rank tearing gloo
        # down while another still talks to it aborts ("terminate called without an
        # active exception").
        dist.barrier()
        dist.destroy_process_group()


def broadcast(world: World, value):
    """Rank 0's `value` (any picklable object) on every rank."""
    if world.backend is None:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_sum(tensor, differentiable: bool = False):
    """The sum of `tensor` over the ranks (itself in a world of one)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    if differentiable:
        return _all_sum_function().apply(tensor)
    tensor = tensor.clone()
    dist.all_reduce(tensor)
    return tensor


@functools.cache
def _all_sum_function():
    """The sum over the ranks as an autograd function: the gradient of a sum that every
    rank uses is the sum of the ranks' gradients. (torch.distributed.nn's all_reduce does
    the same but is deprecated in torch 2.13.)"""
    import torch
    import torch.distributed as dist

    class AllSum(torch.autograd.Function):
        @staticmethod
        def forward(ctx, tensor):
            tensor = tensor.clone(memory_format=torch.contiguous_format)
            dist.all_reduce(tensor)
            return tensor

        @staticmethod
        def backward(ctx, grad):
            grad = grad.clone(memory_format=torch.contiguous_format)
            dist.all_reduce(grad)
            return grad

    return AllSum


@functools.cache
def _global_batchnorm_class():
    import torch
    from torch import nn

    class GlobalBatchNorm2d(nn.BatchNorm2d):
        """BatchNorm2d whose training statistics are those of the global batch.

        The mean and the biased variance are summed over the ranks (two passes, for
        accuracy); the gradient flows through the all-reduce, as in SyncBatchNorm. In
        eval mode it is BatchNorm2d on the running statistics, which are updated with the
        global unbiased variance as BatchNorm2d updates them.
        """

        def forward(self, x):
            # Under bf16 autocast the statistics and the normalisation are computed in the
            # parameters' dtype, as autocast does for BatchNorm2d.
            own = self.weight if self.weight is not None else self.running_mean
            if own is not None and x.is_floating_point() and x.dtype != own.dtype:
                x = x.to(own.dtype)
            if not self.training:
                return super().forward(x)
            dims = (0, 2, 3)
            count = all_sum(torch.tensor(float(x.numel() // x.shape[1]), device=x.device))
            mean = all_sum(x.sum(dims), differentiable=True) / count
            centred = x - mean.view(1, -1, 1, 1)
            var = all_sum(centred.square().sum(dims), differentiable=True) / count
            self._update_running(mean.detach(), var.detach(), count)
            scale = torch.rsqrt(var + self.eps)
            if self.affine:
                return centred * (self.weight * scale).view(1, -1, 1, 1) + self.bias.view(
                    1, -1, 1, 1
                )
            return centred * scale.view(1, -1, 1, 1)

        @torch.no_grad()
        def _update_running(self, mean, var, count) -> None:
            if not self.track_running_stats:
                return
            self.num_batches_tracked.add_(1)
            momentum = (
                1.0 / self.num_batches_tracked.item() if self.momentum is None else self.momentum
            )
            unbiased = var * (count / (count - 1).clamp(min=1))
            self.running_mean.lerp_(mean, momentum)
            self.running_var.lerp_(unbiased, momentum)

    return GlobalBatchNorm2d


def convert_batchnorm(module):
    """Replace every BatchNorm2d of `module` by a GlobalBatchNorm2d holding its weights and
    buffers; returns the module (or its replacement, when it is a BatchNorm2d itself)."""
    from torch import nn

    cls = _global_batchnorm_class()
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, cls):
        replacement = cls(
            module.num_features, module.eps, module.momentum, module.affine,
            module.track_running_stats,
        )  # fmt: skip
        # The replacement is made in the default dtype on the CPU: moved first to where
        # the BatchNorm's own tensors are, so that a float64 model stays float64.
        tensors = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
        floating = next((t for t in tensors if t.is_floating_point()), None)
        if floating is not None:
            replacement.to(device=floating.device, dtype=floating.dtype)
        replacement.load_state_dict(module.state_dict())
        replacement.train(module.training)
        return replacement
    for name, child in module.named_children():
        setattr(module, name, convert_batchnorm(child))
    return module


def data_parallel(model, world: World):
    """The model wrapped in DistributedDataParallel inside a process group, else itself."""
    if world.backend is None:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [world.local_rank] if world.device.startswith("cuda") else None
    return DistributedDataParallel(model, device_ids=device_ids)


def rank_batches(world: World, n: int, batch: int, seed: int, epoch: int):
    """The indices of this rank's share of every global batch of one epoch.

    `DistributedSampler` gives rank r the positions r, r + W, r + 2W, ... of a permutation
    seeded by (seed, epoch) that does not depend on W; cutting that shard into runs of
    batch / W makes the ranks' runs of step k exactly the positions k*batch to
    (k+1)*batch - 1 of the permutation: the global batch of a one-rank run. Incomplete
    global batches are dropped, on every world size alike.
    """
    from torch.utils.data import DistributedSampler

    sampler = DistributedSampler(
        range(n), num_replicas=world.size, rank=world.rank, shuffle=True, seed=seed,
        drop_last=True,
    )  # fmt: skip
    sampler.set_epoch(epoch)
    share = batch // world.size
    shard = list(sampler)
    return [shard[i * share : (i + 1) * share] for i in range(n // batch)]
