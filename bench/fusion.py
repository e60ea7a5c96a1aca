"""The update outside the blocks: generated code against the naive rule, torch.compile, and
the memory-traffic floor, side by side in one run.

Blocks are replaced by precomputed tensors, so only the update of each layer is timed.
For each explicit catalog rule: the generated module's update; the same rule typed the
naive way (ordinary operators, one temporary per operator); torch.compile of that naive
code (steady state; its compile time apart); and the floor: the time of a plain copy
scaled to the bytes the update must read and write.

    python bench/fusion.py [--sizes 1M,16M] [--dtypes float32,bfloat16] [--depth 4] [--repeats 7] [--no-compile]
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import torch
import torch.nn.functional as F

from common import load_generated, median_times, sync

# rule: (class, naive update, tensors read + written per layer in units of the state size)
RULES = {}


def rule(stem, class_name, traffic):
    def register(fn):
        RULES[stem] = (class_name, fn, traffic)
        return fn

    return register


@rule("gd", "GD", 3)  # read x, T; write x
def naive_gd(x, g, depth, m):
    for k in range(depth):
        x = x - 1.0 * g
    return x


@rule("heavy_ball", "HeavyBall", 4)  # read x, x-, T; write x+
def naive_heavy_ball(x, g, depth, m):
    x_prev = x
    for k in range(depth):
        x_next = x - 0.5 * g + 0.5 * (x - x_prev)
        x_prev, x = x, x_next
    return x


@rule("nesterov", "Nesterov", 6)  # x+ = y - tT: read y, T, write x+; y = ...: read x+, x, write y
def naive_nesterov(x, g, depth, m):
    t = F.softplus(m.t_raw)
    y = x
    for k in range(depth):
        x_next = y - t * g
        y = x_next + 0.9 * (x_next - x)
        x = x_next
    return x


@rule("nesterov_k", "NesterovK", 6)
def naive_nesterov_k(x, g, depth, m):
    t = F.softplus(m.t_raw)
    y = x
    for k in range(depth):
        beta = k / (k + 3)
        x_next = y - t * g
        y = x_next + beta * (x_next - x)
        x = x_next
    return x


@rule(
    "dense", "Dense", 5
)  # acc += g: read acc, g, write acc; x = x0 - t acc: read x0, acc, write x (6, minus g reread)
def naive_dense(x, g, depth, m):
    x0, acc = x, torch.zeros_like(x)
    for k in range(depth):
        acc = acc + g
        x = x0 - 0.5 * acc
    return x


@rule(
    "ladmm", "LADMM", 12
)  # x+: read x, z, lam, F, write; z+: read z, x+, lam, G, write; lam+: read lam, x+, z+, write
def naive_ladmm(x, g, depth, m):
    t, rho = 0.5, 0.5
    z, lam = x, torch.zeros_like(x)
    for k in range(depth):
        x_next = x - t * (g + lam + rho * (x - z))
        z_next = z - t * (g - lam - rho * (x_next - z))
        lam = lam + rho * (x_next - z_next)
        x, z = x_next, z_next
    return x


class Precomputed(torch.nn.Module):
    """Stands in for a block: returns a tensor computed beforehand."""

    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.value = value

    def forward(self, z):
        return self.value


def parse_size(text: str) -> int:
    scale = {"K": 2**10, "M": 2**20}.get(text[-1].upper(), 1)
    return int(float(text.rstrip("KkMm")) * scale) if scale != 1 else int(text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1M,16M")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--rules", default=",".join(RULES))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    print(
        f"device {device} ({torch.get_num_threads()} threads), torch {torch.__version__}, depth {args.depth}, median of {args.repeats}"
    )
    print()
    print(
        "| rule | elements | dtype | generated (ms) | naive (ms) | compiled naive (ms) | floor (ms) | generated / naive | generated / compiled | floor / generated | compile time (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for size_text in args.sizes.split(","):
        n = parse_size(size_text)
        for dtype_name in args.dtypes.split(","):
            dtype = getattr(torch, dtype_name)
            src = torch.randn(n, device=device).to(dtype)
            dst = torch.empty_like(src)
            copy = median_times({"copy": lambda: dst.copy_(src)}, device, args.repeats)["copy"]
            for stem in args.rules.split(","):
                class_name, naive, traffic = RULES[stem]
                torch.manual_seed(0)
                module = load_generated(stem, class_name)(4, depth=args.depth).to(
                    device=device, dtype=dtype
                )
                x = torch.randn(n // 4, 4, device=device).to(dtype)
                g = torch.randn(n // 4, 4, device=device).to(dtype)
                for layers in module.blocks.values():
                    for i in range(len(layers)):
                        layers[i] = Precomputed(g)
                fns = {
                    "generated": lambda: module(x),
                    "naive": lambda: naive(x, g, args.depth, module),
                }
                compile_time = float("nan")
                if not args.no_compile:
                    torch._dynamo.reset()
                    compiled = torch.compile(lambda x: naive(x, g, args.depth, module))
                    start = time.perf_counter()
                    compiled(x)
                    sync(device)
                    compile_time = time.perf_counter() - start
                    fns["compiled"] = lambda: compiled(x)
                with torch.no_grad():
                    times = median_times(fns, device, args.repeats)
                floor = copy * traffic / 2 * args.depth
                gen, nai = times["generated"], times["naive"]
                comp = times.get("compiled", float("nan"))
                print(
                    f"| {stem} | {size_text} | {dtype_name} | {1e3 * gen:.2f} | {1e3 * nai:.2f} | {1e3 * comp:.2f} | {1e3 * floor:.2f} | "
                    f"{gen / nai:.2f} | {gen / comp:.2f} | {floor / gen:.2f} | {compile_time:.1f} |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
