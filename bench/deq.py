"""The generated equilibrium module's solves against the same layer built on torchdeq,
side by side: iterations and time at tolerances 1e-4, 1e-6 and 1e-8 (float64 for the
tightest), Anderson and plain fixed-point iteration.

Both solve z = (1 - t) z + t x - t T(z) (examples/deq.opt) with the same block T (the
same weights), at most --max-iter iterations, a relative tolerance forward and backward
(optgen: every sample's ||f(z) - z|| / ||f(z)|| below tol; torchdeq: its "rel" stop
mode), Anderson with m = 5, and implicit differentiation for the backward pass. The
outputs of the two are compared (largest absolute difference). Timings are medians of
interleaved repeats in one run; the ratios are what to read (these machines are noisy).

torchdeq is not a dependency of optgen: without it the torchdeq columns print "-".

    pip install torchdeq   # optional, for the torchdeq columns
    python bench/deq.py [--batch 256] [--dim 64] [--repeats 10] [--tols 1e-4,1e-6,1e-8]
                        [--solvers anderson,fixed_point] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import sys

import torch
from common import load_generated, median_times, saved_bytes

# optgen's solver name -> torchdeq's
TORCHDEQ_SOLVERS = {"anderson": "anderson", "fixed_point": "fixed_point_iter"}
FLOAT64_BELOW = 1e-7  # tolerances float32 cannot resolve run in float64


def torchdeq_available() -> bool:
    try:
        import torchdeq  # noqa: F401
    except ImportError:
        return False
    return True


class TorchDEQLayer(torch.nn.Module):
    """The same layer as a researcher would write it with torchdeq."""

    def __init__(self, block: torch.nn.Module, t: float, solver: str, tol: float, max_iter: int):
        super().__init__()
        from torchdeq import get_deq

        self.block = block
        self.t = t
        name = TORCHDEQ_SOLVERS[solver]
        self.deq = get_deq(
            f_solver=name,
            f_max_iter=max_iter,
            f_tol=tol,
            f_stop_mode="rel",
            b_solver=name,
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

    def iterations(self) -> int | None:
        nstep = self.last_info.get("nstep")
        return None if nstep is None else int(nstep.max().item())


def configure(ours: torch.nn.Module, solver: str, tol: float, max_iter: int) -> None:
    ours.solver = {"name": solver, "max_iter": max_iter, "tol": tol}
    if solver == "anderson":
        ours.solver["m"] = 5
    ours.backward = {"name": "implicit", "max_iter": max_iter, "tol": tol}
    ours.on_failure = "warn"


def optgen_iterations(ours: torch.nn.Module, phase: str) -> str:
    counts = [s["iterations"] for s in ours.solver_stats if s["phase"] == phase]
    return str(max(counts)) if counts else "-"


def measure(args, base, solver: str, tol: float, device, with_torchdeq: bool) -> str:
    dtype = torch.float64 if tol < FLOAT64_BELOW else torch.float32
    ours = base.to(dtype)
    configure(ours, solver, tol, args.max_iter)
    torch.manual_seed(1)
    x = torch.randn(args.batch, args.dim, device=device, dtype=dtype)
    models = {"optgen": ours}
    if with_torchdeq:
        models["torchdeq"] = TorchDEQLayer(ours.blocks["T"][0], 0.5, solver, tol, args.max_iter)

    def forward(model):
        def run():
            with torch.no_grad():
                return model(x)

        return run

    def step(model):
        def run():
            xr = x.clone().requires_grad_()
            model(xr).square().mean().backward()

        return run

    functions = {f"forward {n}": forward(m) for n, m in models.items()}
    functions.update({f"step {n}": step(m) for n, m in models.items()})
    times = median_times(functions, device, args.repeats, warmup=1)
    step(ours)()
    backward_iterations = optgen_iterations(ours, "backward")
    z_ours = forward(ours)()
    iterations = {"optgen": optgen_iterations(ours, "forward")}
    residual = max(s["residual"] for s in ours.solver_stats if s["phase"] == "forward")
    cells = [solver, f"{tol:g}", str(dtype).replace("torch.", ""), iterations["optgen"]]
    if with_torchdeq:
        theirs = models["torchdeq"]
        z_theirs = forward(theirs)()
        difference = f"{(z_ours - z_theirs).abs().max().item():.1e}"
        cells.append(str(theirs.iterations()))
    else:
        difference = "-"
        cells.append("-")
    for kind in ("forward", "step"):
        mine, other = times[f"{kind} optgen"], times.get(f"{kind} torchdeq")
        cells += [f"{1e3 * mine:.2f}", "-" if other is None else f"{1e3 * other:.2f}"]
        cells.append("-" if other is None else f"{mine / other:.2f}")
    cells += [backward_iterations, f"{residual:.1e}", difference]
    return "| " + " | ".join(cells) + " |"


def saved_line(ours, args, device, with_torchdeq: bool) -> str:
    """Bytes autograd keeps during a training step (anderson, tol 1e-4, float32)."""
    configure(ours, "anderson", 1e-4, 50)
    x = torch.randn(args.batch, args.dim, device=device)
    models = {"optgen": ours}
    if with_torchdeq:
        models["torchdeq"] = TorchDEQLayer(ours.blocks["T"][0], 0.5, "anderson", 1e-4, 50)
    saved = {
        name: saved_bytes(lambda m=model: m(x.clone().requires_grad_()).square().mean())
        for name, model in models.items()
    }
    return "bytes saved for backward (anderson, tol 1e-4, float32): " + ", ".join(
        f"{name} {n}" for name, n in saved.items()
    )


HEADER = (
    "| solver | tol | dtype | optgen iterations | torchdeq iterations | optgen forward (ms) "
    "| torchdeq forward (ms) | forward ratio | optgen step (ms) | torchdeq step (ms) "
    "| step ratio | optgen backward iterations | optgen residual | max difference |"
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--max-iter", type=int, default=200)
    parser.add_argument("--tols", default="1e-4,1e-6,1e-8")
    parser.add_argument("--solvers", default="anderson,fixed_point")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    solvers = args.solvers.split(",")
    unknown = [s for s in solvers if s not in TORCHDEQ_SOLVERS]
    if unknown:
        parser.error(f"unknown solvers {unknown}; known: {', '.join(TORCHDEQ_SOLVERS)}")
    with_torchdeq = torchdeq_available()
    torch.manual_seed(0)
    base = load_generated("deq", "Deq")(args.dim).to(device)
    print(
        f"device {device}, batch {args.batch}, dim {args.dim}, at most {args.max_iter} "
        f"iterations, median of {args.repeats} interleaved repeats"
    )
    if not with_torchdeq:
        print("torchdeq not installed (pip install torchdeq): its columns print '-'")
    print()
    print(HEADER)
    print("|" + "---|" * HEADER.count(" | ") + "---|")
    for solver in solvers:
        for tol in sorted((float(t) for t in args.tols.split(",")), reverse=True):
            print(measure(args, base, solver, tol, device, with_torchdeq), flush=True)
    print()
    print(saved_line(base.float(), args, device, with_torchdeq))
    return 0


if __name__ == "__main__":
    sys.exit(main())
