"""The update outside the blocks: generated code against the naive rule, torch.compile, and
the memory-traffic floor, side by side in one run.

Blocks are replaced by precomputed tensors, so only the update of each layer is timed.
For each explicit catalog rule: the generated module's update; the same rule typed the
naive way (ordinary operators, one temporary per operator); torch.compile of that naive
code (steady state; its compile time apart, measured cold: inductor's caches are off);
and the floor: the time of a plain copy into a reused buffer, timed in the same
interleaved repeats, scaled to the tensor passes the update must make at the least.
Generated and naive outputs are checked to agree before anything is timed.

Two allocator settings, one after the other in the same run: `default` (the C library
as it comes: on glibc every block above 32 MB is a fresh mmap, page-faulted on first
touch) and `warm` (glibc told to keep large blocks mapped, as a caching allocator does;
see common.keep_large_blocks_mapped). The warm setting cannot be undone in a process,
so it always runs last.

    python bench/fusion.py [--sizes 1M,16M] [--dtypes float32,bfloat16] [--depth 4] [--repeats 7]
                           [--allocators default,warm] [--no-compile]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

# Compile times are reported cold: with inductor's on-disk caches a second run would
# report a cache hit. Set before torch is imported, since inductor reads it then.
os.environ.setdefault("TORCHINDUCTOR_FORCE_DISABLE_CACHES", "1")
warnings.filterwarnings("ignore", message="dynamo_pgo force disabled")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from common import (  # noqa: E402
    ALLOCATOR_UNAVAILABLE,
    keep_large_blocks_mapped,
    load_generated,
    median_times,
    sync,
)

# rule: (class, naive update, tensors read + written per layer in units of the state size)
RULES = {}


def rule(stem, class_name, traffic):
    def register(build):
        RULES[stem] = (class_name, build, traffic)
        return build

    return register


# Each naive rule is one layer's update as a researcher types it: a function of the
# states and the block output g, so that torch.compile sees one layer (the block call
# between layers is a fusion barrier in a real network, as it is for the generated code).
# The output state comes first; the constants are the catalog's (examples/*.opt), and
# main() checks the naive output against the generated module's.


@rule("gd", "GD", 3)  # read x, T; write x
def naive_gd(m):
    return (lambda x: (x,)), (lambda s, g, k: (s[0] - 1.0 * g,))


@rule("heavy_ball", "HeavyBall", 4)  # read x, x-, T; write x+
def naive_heavy_ball(m):
    def step(s, g, k):
        x, x_prev = s
        return x - 0.5 * g + 0.5 * (x - x_prev), x

    return (lambda x: (x, x)), step


def nesterov_like(beta_of):
    def build(m):
        t = F.softplus(m.t_raw).detach()

        def step(s, g, k):
            x, y = s
            x_next = y - t * g
            return x_next, x_next + beta_of(k) * (x_next - x)

        return (lambda x: (x, x)), step

    return build


# read y, T, x; write x+, y (a fused kernel keeps x+ in a register for the second statement)
RULES["nesterov"] = ("Nesterov", nesterov_like(lambda k: 0.9), 5)
RULES["nesterov_k"] = ("NesterovK", nesterov_like(lambda k: k / (k + 3)), 5)


@rule("dense", "Dense", 5)  # read acc, T, x0; write acc, x
def naive_dense(m):
    def step(s, g, k):
        x, x0, acc = s
        acc = acc + g
        return x0 - 0.5 * acc, x0, acc

    return (lambda x: (x, x, torch.zeros_like(x))), step


@rule("ladmm", "LADMM", 8)  # read x, z, lam, F, G; write x+, z+, lam+
def naive_ladmm(m):
    t, rho = 0.5, 0.5

    def step(s, g, k):
        x, z, lam = s
        x_next = x - t * (g + lam + rho * (x - z))
        z_next = z - t * (g - lam - rho * (x_next - z))
        return x_next, z_next, lam + rho * (x_next - z_next)

    return (lambda x: (x, x, torch.zeros_like(x))), step


class Precomputed(torch.nn.Module):
    """Stands in for a block: returns a tensor computed beforehand."""

    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.value = value

    def forward(self, z):
        return self.value


def check_same(generated: torch.Tensor, other: torch.Tensor, stem: str, what: str) -> None:
    """The timed functions compute the same thing (to the rounding of their dtype)."""
    low_precision = generated.dtype in (torch.float16, torch.bfloat16)
    tolerance = 0.1 if low_precision else 1e-4
    torch.testing.assert_close(
        other, generated, rtol=tolerance, atol=tolerance, msg=lambda m: f"{stem}, {what}: {m}"
    )


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
    parser.add_argument("--allocators", default="default,warm")
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    allocators = args.allocators.split(",")
    if allocators != sorted(allocators):  # "default" < "warm": warm cannot be undone
        parser.error("--allocators: 'warm' must come last")
    print(
        f"device {device} ({torch.get_num_threads()} threads), torch {torch.__version__}, depth {args.depth}, median of {args.repeats}"
    )
    print()
    print(
        "| allocator | rule | elements | dtype | generated (ms) | naive (ms) | compiled naive (ms) | floor (ms) | generated / naive | generated / compiled | floor / generated | compile time (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    if not args.no_compile:  # one-time start-up of the compiler, kept out of compile times
        torch.compile(lambda a: a * 2)(torch.ones(4, device=device))
    for allocator in allocators:
        if allocator == "warm" and device.type == "cpu" and not keep_large_blocks_mapped():
            print()
            print(f"warm: {ALLOCATOR_UNAVAILABLE}", flush=True)
            continue
        run_setting(allocator, device, args)
    return 0


def run_setting(allocator: str, device: torch.device, args) -> None:
    """One table section: every size, dtype and rule under the current allocator."""
    for size_text in args.sizes.split(","):
        n = parse_size(size_text)
        for dtype_name in args.dtypes.split(","):
            dtype = getattr(torch, dtype_name)
            src = torch.randn(n, device=device).to(dtype)
            dst = torch.empty_like(src)
            for stem in args.rules.split(","):
                class_name, build, traffic = RULES[stem]
                torch.manual_seed(0)
                module = load_generated(stem, class_name)(4, depth=args.depth).to(
                    device=device, dtype=dtype
                )
                x = torch.randn(n // 4, 4, device=device).to(dtype)
                g = torch.randn(n // 4, 4, device=device).to(dtype)
                for layers in module.blocks.values():
                    for i in range(len(layers)):
                        layers[i] = Precomputed(g)
                init, step = build(module)

                def layers(step_fn):
                    s = init(x)
                    for k in range(args.depth):
                        s = step_fn(s, g, k)
                    return s[0]

                with torch.no_grad():
                    check_same(module(x), layers(step), stem, "naive")

                # The memory-traffic floor: a plain copy (read n, write n) into a reused
                # buffer, timed in the same interleaved repeats as the rest.
                fns = {
                    "generated": lambda: module(x),
                    "naive": lambda: layers(step),
                    "copy": lambda: dst.copy_(src),
                }
                compile_time = float("nan")
                if not args.no_compile:
                    torch._dynamo.reset()
                    compiled_step = torch.compile(step)
                    start = time.perf_counter()
                    with torch.no_grad():
                        layers(compiled_step)
                    sync(device)
                    compile_time = time.perf_counter() - start
                    fns["compiled"] = lambda: layers(compiled_step)
                    with torch.no_grad():
                        check_same(module(x), layers(compiled_step), stem, "compiled naive")
                with torch.no_grad():
                    times = median_times(fns, device, args.repeats)
                floor = times["copy"] * traffic / 2 * args.depth
                gen, nai = times["generated"], times["naive"]
                comp = times.get("compiled", float("nan"))
                print(
                    f"| {allocator} | {stem} | {size_text} | {dtype_name} | {1e3 * gen:.2f} | {1e3 * nai:.2f} | {1e3 * comp:.2f} | {1e3 * floor:.2f} | "
                    f"{gen / nai:.2f} | {gen / comp:.2f} | {floor / gen:.2f} | {compile_time:.1f} |",
                    flush=True,
                )


if __name__ == "__main__":
    sys.exit(main())
