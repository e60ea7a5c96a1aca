"""Gradients of a generated module on 2 gloo ranks (DDP or FSDP2) against one process.

Run by tests/test_distributed.py as `python distributed_check.py MODULE_FILE PORT`: for
DDP and then FSDP2 (one process group, to start the ranks once), rank 0 prints the largest
difference between the data-parallel gradients (times the world size: both wrappers
average) and the single-process gradients of the full batch, float64, as JSON by mode.
Localhost only, and every rank stops on its own (a timeout on the process group).
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 2
BATCH = 4


def _module_class(path: str):
    spec = importlib.util.spec_from_file_location("checked_module", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, module.__all__[0])


def build(path: str):
    torch.manual_seed(0)
    module = _module_class(path)(4, depth=2).double()
    if hasattr(module, "solver"):  # solve far below float64 noise: gradients compare to 1e-10
        module.solver = {"name": "fixed_point", "max_iter": 2000, "tol": 1e-14}
        module.backward = {"name": "implicit", "max_iter": 2000, "tol": 1e-14}
    return module


def batch() -> torch.Tensor:
    return torch.randn(BATCH, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def gradients(module) -> dict[str, torch.Tensor]:
    out = {}
    for name, p in module.named_parameters():
        grad = p.grad
        if hasattr(grad, "full_tensor"):  # FSDP2: a sharded DTensor
            grad = grad.full_tensor()
        out[name.replace("_fsdp_wrapped_module.", "").replace("module.", "", 1)] = grad
    return out


MODES = ("ddp", "fsdp")


def worker(rank: int, path: str, port: int, queue) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group(
        "gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=60)
    )
    try:
        for mode in MODES:
            module = build(path)
            if mode == "ddp":
                wrapped = torch.nn.parallel.DistributedDataParallel(module)
            else:
                from torch.distributed.fsdp import fully_shard

                wrapped = fully_shard(module)
            share = BATCH // WORLD
            wrapped(batch()[rank * share : (rank + 1) * share]).square().sum().backward()
            grads = gradients(module)
            if rank == 0:
                queue.put((mode, {name: (WORLD * g).tolist() for name, g in grads.items()}))
    finally:
        dist.barrier()  # no rank tears gloo down while the other still uses it
        dist.destroy_process_group()
    # The rank leaves without the interpreter's teardown: torch's C++ threads, destroyed
    # at exit while still joinable, abort now and then ("terminate called without an
    # active exception", SIGABRT) after a run that succeeded. What rank 0 queued is
    # flushed first; an exception above still exits the ordinary way, with its traceback.
    queue.close()
    queue.join_thread()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def main() -> None:
    path, port = sys.argv[1], int(sys.argv[2])
    single = build(path)
    single(batch()).square().sum().backward()
    expected = gradients(single)
    context = mp.get_context("spawn")
    queue = context.Queue()
    mp.start_processes(worker, args=(path, port, queue), nprocs=WORLD, start_method="spawn")
    report = {}
    for _ in MODES:
        mode, parallel = queue.get(timeout=60)
        worst = max(
            (torch.tensor(parallel[name], dtype=torch.float64) - g).abs().max().item()
            for name, g in expected.items()
        )
        report[mode] = {"names": sorted(parallel) == sorted(expected), "worst": worst}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
