"""The generated equilibrium module against the same layer built on torchdeq, side by side.

Both solve z = (1 - t) z + t x - t T(z) (examples/deq.opt) with the same block T (the
same weights), Anderson acceleration (m=5), at most 50 iterations, relative tolerance
1e-4, and implicit differentiation for the backward pass. Timings are medians of
interleaved repeats in one run; the ratios are what to read (these machines are noisy).

    pip install torchdeq   # not a dependency of optgen
    python bench/deq.py [--batch 256] [--dim 64] [--repeats 20] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from common import load_generated, saved_bytes, sync


class TorchDEQLayer(torch.nn.Module):
    """The same layer as a researcher would write it with torchdeq."""

    def __init__(self, block: torch.nn.Module, t: float, tol: float, max_iter: int):
        super().__init__()
        from torchdeq import get_deq

        self.block = block
        self.t = t
        self.deq = get_deq(
            f_solver="anderson",
            f_max_iter=max_iter,
            f_tol=tol,
            f_stop_mode="rel",
            b_solver="anderson",
            b_max_iter=max_iter,
            b_tol=tol,
            b_stop_mode="rel",
            ift=True,
        )
        self.last_info = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.t

        def f(z):
            return (1 - t) * z + t * x - t * self.block(z)

        z_list, info = self.deq(f, x)
        self.last_info = info
        return z_list[-1]


def timed(fn, device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    try:
        import torchdeq  # noqa: F401
    except ImportError:
        print("bench/deq.py needs torchdeq: pip install torchdeq", file=sys.stderr)
        return 1
    device = torch.device(args.device)
    torch.manual_seed(0)
    ours = load_generated("deq", "Deq")(args.dim).to(device)
    ours.solver = {"name": "anderson", "m": 5, "max_iter": 50, "tol": 1e-4}
    ours.backward = {"name": "implicit", "max_iter": 50, "tol": 1e-4}
    theirs = TorchDEQLayer(ours.blocks["T"][0], t=0.5, tol=1e-4, max_iter=50).to(device)
    x = torch.randn(args.batch, args.dim, device=device)

    def forward(model):
        with torch.no_grad():
            return model(x)

    def train_step(model):
        xr = x.clone().requires_grad_()
        model(xr).square().mean().backward()

    with torch.no_grad():
        agree = (ours(x) - theirs(x)).norm() / theirs(x).norm()
    rows = {}
    for name, model in (("optgen", ours), ("torchdeq", theirs)):
        rows[name] = {"forward": [], "step": []}
        forward(model), train_step(model)  # warm up
    for _ in range(args.repeats):
        for name, model in (("optgen", ours), ("torchdeq", theirs)):
            rows[name]["forward"].append(timed(lambda: forward(model), device))
            rows[name]["step"].append(timed(lambda: train_step(model), device))
    forward(ours)
    iters_ours = ours.solver_stats[0]["iterations"]
    forward(theirs)
    iters_theirs = (
        int(theirs.last_info["nstep"].max().item()) if "nstep" in theirs.last_info else None
    )
    memory = {
        "optgen": saved_bytes(lambda: ours(x.clone().requires_grad_()).square().mean()),
        "torchdeq": saved_bytes(lambda: theirs(x.clone().requires_grad_()).square().mean()),
    }
    med = {n: {k: statistics.median(v) for k, v in r.items()} for n, r in rows.items()}
    print(
        f"device {device}, batch {args.batch}, dim {args.dim}, {args.repeats} interleaved repeats; "
        f"outputs agree to {agree:.1e} (relative)"
    )
    print()
    print("| | optgen | torchdeq | optgen / torchdeq |")
    print("|---|---|---|---|")
    print(
        f"| forward (ms, median) | {1e3 * med['optgen']['forward']:.2f} | {1e3 * med['torchdeq']['forward']:.2f} | {med['optgen']['forward'] / med['torchdeq']['forward']:.2f} |"
    )
    print(
        f"| forward + backward (ms, median) | {1e3 * med['optgen']['step']:.2f} | {1e3 * med['torchdeq']['step']:.2f} | {med['optgen']['step'] / med['torchdeq']['step']:.2f} |"
    )
    print(f"| forward solver iterations | {iters_ours} | {iters_theirs} | |")
    print(
        f"| bytes saved for backward | {memory['optgen']} | {memory['torchdeq']} | {memory['optgen'] / memory['torchdeq']:.2f} |"
    )
    if device.type == "cuda":
        peaks = {}
        for name, model in (("optgen", ours), ("torchdeq", theirs)):
            torch.cuda.reset_peak_memory_stats()
            train_step(model)
            peaks[name] = torch.cuda.max_memory_allocated()
        print(
            f"| CUDA peak memory of a step (MB) | {peaks['optgen'] / 2**20:.1f} | {peaks['torchdeq'] / 2**20:.1f} | {peaks['optgen'] / peaks['torchdeq']:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
