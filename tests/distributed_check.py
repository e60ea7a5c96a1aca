"""Gradients of a generated module on 2 gloo ranks (DDP or FSDP2) against one process.

Run by tests/test_distributed.py as `python distributed_check.py MODULE_FILE PORT`: for
DDP and then FSDP2 (one process group, to start the ranks once), rank 0 prints the largest
difference between the data-parallel gradients (times the world size: both wrappers
average) and the single-process gradients of the full batch, float64, as JSON by mode.

`python distributed_check.py MODEL_FILE PORT staged` trains a generated staged model
instead: FSDP2's fully_shard on each of `model.stages` and then on the root, two SGD steps
on half the batch per rank, and the same model trained in the rank itself on the full
batch as the one process. Each rank sends back only its worst differences (numbers, never
tensors) and the parent prints the worse of the two as JSON.

Localhost only, and every rank stops on its own: a timeout on the process group's
collectives, and a faulthandler watchdog (DIST_WATCHDOG seconds, 180 by default) that
prints where the rank stands and exits. The parent reads the queue before it joins the
ranks: a rank's queue.put goes through a pipe (64 KiB on Linux), and a rank whose payload
is larger waits at exit for the parent to read it, so a parent that joined first would
wait for ever with every process idle (deep_heavy_ball's gradients as lists: 3.4 MB).
"""

from __future__ import annotations

import datetime
import faulthandler
import importlib.util
import json
import os
import queue as queue_module
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

WORLD = 2
BATCH = 4
TIMEOUT = 60  # seconds: each collective, and the parent's wait for each report


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


def _full(tensor: torch.Tensor) -> torch.Tensor:
    """A sharded DTensor (FSDP2) gathered whole; a plain tensor as it is. A collective
    under FSDP2: every rank calls it, in the same order."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def gradients(module) -> dict[str, torch.Tensor]:
    out = {}
    for name, p in module.named_parameters():
        out[name.replace("_fsdp_wrapped_module.", "").replace("module.", "", 1)] = _full(p.grad)
    return out


MODES = ("ddp", "fsdp")


def _init(rank: int, port: int) -> None:
    faulthandler.dump_traceback_later(
        float(os.environ.get("DIST_WATCHDOG", 3 * TIMEOUT)), exit=True
    )
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group(
        "gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=TIMEOUT)
    )


def _leave(queue) -> None:
    """The rank leaves without the interpreter's teardown: torch's C++ threads, destroyed at
    exit while still joinable, abort now and then ("terminate called without an active
    exception", SIGABRT) after a run that succeeded. What the rank queued is flushed first
    (the parent is reading); an exception before this exits the ordinary way, with its
    traceback."""
    queue.close()
    queue.join_thread()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def worker(rank: int, path: str, port: int, queue) -> None:
    _init(rank, port)
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
    _leave(queue)


# The staged job: a small image (deep_heavy_ball's stride-2 transitions take 8 to 4 to 2; a
# ViT's position embedding fixes its input at INPUT_SIZE), 3 classes, 2 SGD steps.
STAGED_CLASSES = 3
STAGED_STEPS = 2


def build_staged(path: str) -> torch.nn.Module:
    """The same float64 model on every rank and in the one process (FSDP2 shards what each
    rank built, and broadcasts nothing). A model with BatchNorm is put in eval mode: in
    train mode each rank would normalize by its half batch's statistics, which differ from
    the full batch's by definition; in eval mode BatchNorm is a fixed affine map of the
    running statistics (its weight and bias still learn). A model without it trains in
    train mode (the generated ones have no dropout)."""
    torch.manual_seed(0)
    model = _module_class(path)(num_classes=STAGED_CLASSES).double()
    batch_norm = torch.nn.modules.batchnorm._BatchNorm
    return model.train(not any(isinstance(m, batch_norm) for m in model.modules()))


def staged_batch(model) -> tuple[torch.Tensor, torch.Tensor]:
    size = list(model.INPUT_SIZE)
    if not hasattr(model.stem, "position"):  # a token stem's position embedding fixes H, W
        size[1:] = [8, 8]
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH, *size, dtype=torch.float64, generator=generator)
    return x, torch.randint(STAGED_CLASSES, (BATCH,), generator=generator)


def _worst(left: dict[str, torch.Tensor], right: dict[str, torch.Tensor]) -> float:
    assert sorted(left) == sorted(right), (sorted(left), sorted(right))
    return max((left[name] - right[name]).abs().max().item() for name in left)


def staged_worker(rank: int, path: str, port: int, queue) -> None:
    from torch.distributed.fsdp import FSDPModule, fully_shard, register_fsdp_forward_method

    _init(rank, port)
    try:
        single, model = build_staged(path), build_staged(path)
        for stage in model.stages:
            fully_shard(stage)
        fully_shard(model)
        assert all(isinstance(m, FSDPModule) for m in (model, *model.stages))
        x, y = staged_batch(single)
        share = BATCH // WORLD
        mine = slice(rank * share, (rank + 1) * share)

        def values(module) -> dict[str, torch.Tensor]:
            return {name: _full(p.detach()) for name, p in module.named_parameters()}

        report = {"training": model.training, "start": _worst(values(model), values(single))}
        optimizers = [
            torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (single, model)
        ]
        report["loss"], report["grad"], report["param"] = [], [], []
        for step in range(STAGED_STEPS):
            # The second step recomputes each stage in backward: `_stage` then calls the
            # sharded stage through torch.utils.checkpoint (non-reentrant).
            for m in (single, model):
                m.set_grad_checkpointing(step > 0)
            # Mean losses: FSDP2 averages the two ranks' gradients of their half-batch
            # means, which is the gradient of the full batch's mean.
            expected = F.cross_entropy(single(x), y)
            expected.backward()
            loss = F.cross_entropy(model(x[mine]), y[mine])
            loss.backward()
            mean = loss.detach().clone()
            dist.all_reduce(mean)
            report["loss"].append(abs(mean.item() / WORLD - expected.item()))
            report["grad"].append(_worst(gradients(model), gradients(single)))
            for optimizer in optimizers:
                optimizer.step()
                optimizer.zero_grad()
            report["param"].append(_worst(values(model), values(single)))
        # Forward hooks on a sharded stage fire: forward_intermediates records each stage's
        # output by one (register_forward_hook on model.stages[i]). FSDP2 unshards the
        # root's own parameters (stem, transitions, head) around forward only: another
        # entry point is registered, as for any FSDP2 module.
        register_fsdp_forward_method(model, "forward_intermediates")
        with torch.no_grad():
            out, found = model.forward_intermediates(x[mine])
            out_single, found_single = single.forward_intermediates(x)
        report["stages"] = len(found)
        report["intermediates"] = max(
            (a - b[mine]).abs().max().item()
            for a, b in zip([out, *found], [out_single, *found_single], strict=True)
        )
        queue.put((rank, report))
    finally:
        dist.barrier()  # no rank tears gloo down while the other still uses it
        dist.destroy_process_group()
    _leave(queue)


def _run(worker_fn, path: str, port: int, reports: int) -> list:
    """Start the ranks and take `reports` items off the queue, then join the ranks. While it
    waits, a rank that failed is joined at once (torch's spawn raises its traceback there,
    not on stderr), and the wait is bounded; on any failure the ranks started here are
    killed."""
    context = mp.get_context("spawn")
    queue = context.Queue()
    ranks = mp.start_processes(
        worker_fn, args=(path, port, queue), nprocs=WORLD, start_method="spawn", join=False
    )
    try:
        received = []
        deadline = time.monotonic() + 3 * TIMEOUT
        while len(received) < reports:
            try:
                received.append(queue.get(timeout=1))
            except queue_module.Empty:
                ranks.join(timeout=0)  # raises for a rank that failed
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{len(received)} of {reports} reports") from None
        while not ranks.join(timeout=TIMEOUT):
            pass
        return received
    finally:
        for process in ranks.processes:
            if process.is_alive():
                process.kill()


def main() -> None:
    path, port = sys.argv[1], int(sys.argv[2])
    if sys.argv[3:] == ["staged"]:
        reports = [report for _, report in sorted(_run(staged_worker, path, port, WORLD))]
        worse = {
            key: (
                max(r[key] for r in reports)
                if isinstance(reports[0][key], float)
                else [max(values) for values in zip(*(r[key] for r in reports))]
            )
            for key in ("start", "loss", "grad", "param", "intermediates")
        }
        worse["training"] = reports[0]["training"]
        worse["stages"] = reports[0]["stages"]
        print(json.dumps(worse))
        return
    single = build(path)
    single(batch()).square().sum().backward()
    expected = gradients(single)
    report = {}
    for mode, parallel in _run(worker, path, port, len(MODES)):
        worst = max(
            (torch.tensor(parallel[name], dtype=torch.float64) - g).abs().max().item()
            for name, g in expected.items()
        )
        report[mode] = {"names": sorted(parallel) == sorted(expected), "worst": worst}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
