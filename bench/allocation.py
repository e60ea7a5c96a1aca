"""Where the time of a large out-of-place update goes: kernels against fresh memory.

Times, side by side in one run, the primitives behind the floor discussion of
docs/performance.md (a copy into a reused buffer, an add into a fresh tensor and into a
reused one, a clone) and two ways of running four heavy-ball layers without blocks: the
generated code's (a fresh result per layer, as autograd needs) and an inference-only
variant that writes x+ into the dead x- buffer from the third layer on. Both allocator
settings of bench/fusion.py, `default` first (`warm` cannot be undone in a process).

    python bench/allocation.py [--size 16M] [--repeats 9]
"""

from __future__ import annotations

import argparse
import sys

import torch
from common import ALLOCATOR_UNAVAILABLE, keep_large_blocks_mapped, median_times
from fusion import parse_size

DEPTH = 4


def heavy_ball_fresh(x0, g):
    """The generated HeavyBall update (examples/heavy_ball.opt), blocks precomputed."""
    x_prev = x = x0
    for _ in range(DEPTH):
        x_next = torch.lerp(x, g, -0.5)
        x_next.add_(x_prev, alpha=-0.5)
        x_prev, x = x, x_next
    return x


def heavy_ball_reusing(x0, g):
    """The same, but x+ = lerp(x, x- + T(x), -0.5) written into x-'s buffer once it is ours."""
    x_prev = x = x0
    for k in range(DEPTH):
        if k < 2:  # x- is still the caller's input (k = 0, 1): it must not be written
            x_next = torch.lerp(x, g, -0.5)
            x_next.add_(x_prev, alpha=-0.5)
        else:
            x_next = x_prev.add_(g)
            torch.lerp(x, x_next, -0.5, out=x_next)
        x_prev, x = x, x_next
    return x


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="16M")
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args(argv)
    n = parse_size(args.size)
    device = torch.device("cpu")
    print(f"{n} float32 elements, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print()
    print(
        "| allocator | copy_ (ms) | add, fresh (ms) | add, out= (ms) | clone (ms) | heavy ball x4, fresh (ms) "
        "| heavy ball x4, reusing (ms) | floor / fresh | floor / reusing |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    a, b, dst = torch.randn(n), torch.randn(n), torch.empty(n)
    torch.testing.assert_close(heavy_ball_fresh(a, b), heavy_ball_reusing(a, b))
    for allocator in ("default", "warm"):
        if allocator == "warm" and not keep_large_blocks_mapped():
            print()
            print(f"warm: {ALLOCATOR_UNAVAILABLE}")
            break
        functions = {
            "copy": lambda: dst.copy_(a),
            "add fresh": lambda: torch.add(a, b, alpha=0.5),
            "add out": lambda: torch.add(a, b, alpha=0.5, out=dst),
            "clone": lambda: a.clone(),
            "fresh": lambda: heavy_ball_fresh(a, b),
            "reusing": lambda: heavy_ball_reusing(a, b),
        }
        ms = {k: 1e3 * v for k, v in median_times(functions, device, args.repeats).items()}
        floor = ms["copy"] * 4 / 2 * DEPTH  # read x, x-, T(x); write x+: 4 passes a layer
        cells = [f"{ms[k]:.2f}" for k in functions]
        ratios = [f"{floor / ms['fresh']:.2f}", f"{floor / ms['reusing']:.2f}"]
        print(f"| {allocator} | " + " | ".join(cells + ratios) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
