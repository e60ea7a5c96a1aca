"""Memory against depth: standard, checkpointed and reversible generated networks against
the same networks written by hand (a plain loop, and a loop with torch.utils.checkpoint
per block), for gd, heavy ball and Nesterov at depth 8, 32 and 128.

The generated variants are compiled at run time from .opt texts (`optgen.loads`): the
same rule with no memory declaration, with `checkpoint 1` (every layer recomputed in
backward), and with `backward reversible` (language.md, section 15). A variant the
compiler refuses (gd is not invertible; a compiler without these declarations) prints
as "not available" with the compiler's message. All variants of a rule carry the same
weights (the standard network's state dict, or the same seed).

Per variant and depth: the bytes autograd saves for backward during a training step
(forward and backward of a mean-square loss), the peak memory of that step (CUDA's
allocator peak; on CPU the peak of live tensor bytes, bench/common.py: PeakTensorBytes),
parameter gradients allocated beforehand (a training loop keeps its .grad), and the peak
of no_grad inference. The figure is the slope: the value at the deepest depth over the
value at the shallowest. Also the step time over the standard generated step at the same
depth (the least of interleaved repeats) and the largest gradient difference from the
standard network (relative to each gradient's largest entry). Goal: reversible flat in depth (within 10% from 8 to 128) at <= 1.5x
the standard step time.

    python bench/memory.py [--depths 8,32,128] [--dim 32] [--batch 256] [--repeats 5]
                           [--rules gd,heavy_ball,nesterov] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import dataclass

import torch
import torch.utils.checkpoint
from common import ROOT, HandWrittenNetwork, best_times, call_block, peak_bytes, saved_bytes

sys.path.insert(0, str(ROOT))  # optgen from this checkout

from optgen import loads  # noqa: E402
from optgen.errors import OptgenError  # noqa: E402

# The rules at a step and momentum that stay bounded over 128 layers of random blocks,
# and a momentum whose inverse (the reversible reconstruction divides by beta) grows an
# error by 1/0.9 a layer.
RULES = {
    "gd": ("Gd", ["param t = 0.1"], ["x+ = x - t*T(x)"]),
    "heavy_ball": (
        "HeavyBall",
        ["param t = 0.1", "param beta = 0.9 in [0, 1)"],
        ["x+ = x - t*T(x) + beta*(x - x-)"],
    ),
    "nesterov": (
        "Nesterov",
        ["init y = x", "param t = 0.1", "param beta = 0.9 in [0, 1)"],
        ["x+ = y - t*T(y)", "y = x+ + beta*(x+ - x)"],
    ),
}
STATES = {"gd": "x", "heavy_ball": "x", "nesterov": "x, y"}

# Generated variant: (network name suffix, the declaration added to the rule).
GENERATED = {
    "standard": ("Standard", ""),
    "checkpointed": ("Checkpointed", "checkpoint 1"),
    "reversible": ("Reversible", "backward reversible"),
}
HAND = ("hand-written", "hand-written, checkpoint per block")


def opt_text(rule: str, variant: str) -> str:
    name, params, update = RULES[rule]
    suffix, declaration = GENERATED[variant]
    lines = [
        f"network {name}{suffix} {{",
        f"    state {STATES[rule]}",
        *(f"    {p}" for p in params),
        "    block T = mlp(hidden=2*dim, act=relu)",
        "    layers 8",
        *([f"    {declaration}"] if declaration else []),
        "    update {",
        *(f"        {u}" for u in update),
        "    }",
        *(["    output x"] if rule == "nesterov" else []),
        "}",
    ]
    return "\n".join(lines) + "\n"


@dataclass
class Variant:
    name: str
    build: object | None  # depth -> nn.Module, or None when not available
    note: str = ""


def compiled_class(rule: str, variant: str):
    """The module class of a generated variant, or the compiler's reason it has none."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            classes = loads(opt_text(rule, variant), f"{rule}_{variant}.opt")
        except OptgenError as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            return None, f"not available: {first}"
    note = "; ".join(str(w.message).splitlines()[0] for w in caught)
    return next(iter(classes.values())), (f"warned: {note}" if note else "")


def checkpointed_call(block, z):
    return torch.utils.checkpoint.checkpoint(block, z, use_reentrant=False)


def variants(rule: str, dim: int, device: torch.device) -> list[Variant]:
    classes = {v: compiled_class(rule, v) for v in GENERATED}
    standard_class = classes["standard"][0]

    def generated(cls):
        def build(depth):
            torch.manual_seed(0)
            reference = standard_class(dim, depth=depth)
            torch.manual_seed(0)
            module = cls(dim, depth=depth)
            try:
                module.load_state_dict(reference.state_dict())
            except RuntimeError:
                pass  # other parameter names: the same seed gave the same weights
            return module.to(device)

        return build

    def hand(call):
        return lambda depth: HandWrittenNetwork(generated(standard_class)(depth), rule, call)

    found = [
        Variant(v, generated(cls) if cls else None, note) for v, (cls, note) in classes.items()
    ]
    found.append(Variant(HAND[0], hand(call_block)))
    found.append(Variant(HAND[1], hand(checkpointed_call)))
    return found


def gradients(model, x) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    model(x).square().mean().backward()
    return [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]


def measure_depth(rule: str, found: list[Variant], depth: int, args, device) -> dict:
    torch.manual_seed(1)
    x = torch.randn(args.batch, args.dim, device=device)
    models = {v.name: v.build(depth) for v in found if v.build}
    reference_grads = gradients(models["standard"], x)
    figures = {}
    for name, model in models.items():
        grads = gradients(model, x)  # also leaves .grad allocated for the peak below
        # Relative to each gradient's scale: 128 layers of float32 rounding add up.
        difference = max(
            ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()
            for a, b in zip(grads, reference_grads)
        )

        def loss(model=model):
            return model(x).square().mean()

        def train_step(model=model):
            model.zero_grad(set_to_none=False)
            loss().backward()

        def inference(model=model):
            with torch.no_grad():
                model(x)

        figures[name] = {
            "saved": saved_bytes(loss),
            "train": peak_bytes(train_step, device),
            "inference": peak_bytes(inference, device),
            "difference": difference,
        }
    steps = {}
    for name, model in models.items():

        def step(model=model):
            model.zero_grad(set_to_none=False)
            model(x).square().mean().backward()

        steps[name] = step
    times = best_times(steps, device, args.repeats, warmup=1)
    for name in models:
        figures[name]["time"] = times[name] / times["standard"]
    return figures


def kib(n: int) -> str:
    return f"{n / 1024:.1f}"


def row(rule: str, variant: Variant, by_depth: dict, depths: list[int]) -> str:
    if variant.build is None:
        cells = ["-"] * (3 * len(depths) + 5)
        return "| " + " | ".join([rule, variant.name, *cells, variant.note]) + " |"
    f = [by_depth[d][variant.name] for d in depths]
    cells = [rule, variant.name]
    for key in ("saved", "train", "inference"):
        cells += [kib(fd[key]) for fd in f]
        if key != "inference":
            cells.append(f"{f[-1][key] / f[0][key]:.2f}" if f[0][key] else "-")
    cells.append(f"{f[-1]['inference'] / f[0]['inference']:.2f}" if f[0]["inference"] else "-")
    cells.append(f"{f[-1]['time']:.2f}")
    cells.append(f"{max(fd['difference'] for fd in f):.1e}")
    cells.append(variant.note)
    return "| " + " | ".join(cells) + " |"


def header(depths: list[int]) -> str:
    first, last = depths[0], depths[-1]
    slope = f"{last}/{first}"
    cells = ["rule", "variant"]
    cells += [f"saved KiB d{d}" for d in depths] + [f"saved {slope}"]
    cells += [f"train peak KiB d{d}" for d in depths] + [f"train peak {slope}"]
    cells += [f"inference peak KiB d{d}" for d in depths] + [f"inference {slope}"]
    cells += [f"step time / standard d{last}", "grad difference", "note"]
    return "| " + " | ".join(cells) + " |"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="8,32,128")
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rules", default=",".join(RULES))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    depths = sorted(int(d) for d in args.depths.split(","))
    rules = args.rules.split(",")
    unknown = [r for r in rules if r not in RULES]
    if unknown:
        parser.error(f"unknown rules {unknown}; known: {', '.join(RULES)}")
    print(
        f"device {device} ({torch.get_num_threads()} threads), torch {torch.__version__}, "
        f"mlp blocks dim {args.dim} (hidden {2 * args.dim}), batch {args.batch}, "
        f"least of {args.repeats} interleaved repeats; memory in KiB"
    )
    print()
    print(header(depths))
    print("|" + "---|" * header(depths).count(" | ") + "---|")
    for rule in rules:
        found = variants(rule, args.dim, device)
        by_depth = {d: measure_depth(rule, found, d, args, device) for d in depths}
        for variant in found:
            print(row(rule, variant, by_depth, depths), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
