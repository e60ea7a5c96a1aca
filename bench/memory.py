"""Memory against depth: standard, checkpointed and reversible generated networks against
the same networks written by hand (a plain loop, and a loop with torch.utils.checkpoint
per block), for gd, heavy ball and Nesterov at depth 8, 32 and 128.

The generated variants are compiled at run time from .opt texts (`optgen.loads`), one per
depth (`layers D`, so that the compiler checks that depth): the same rule with no memory
declaration, with `checkpoint 1` (every layer recomputed in backward) and `checkpoint 2`,
and with `backward reversible` (language.md, section 15). A variant the compiler refuses (gd is not
invertible) prints as "not available" with the compiler's message, and its warnings go
in the note. All variants of a rule carry the same weights (the standard network's state
dict, or the same seed).

Per variant and depth: the bytes autograd saves for backward during a training step
(forward and backward of a mean-square loss), the peak memory of that step (CUDA's
allocator peak; on CPU the peak of live tensor bytes, bench/common.py: PeakTensorBytes),
parameter gradients allocated beforehand (a training loop keeps its .grad), and the peak
of no_grad inference. The figure is the slope: the value at the deepest depth over the
value at the shallowest. Also the largest gradient difference from the standard network
(relative to each gradient's largest entry), and the step time at the deepest depth over
the standard generated step's (the least of interleaved repeats), measured at a larger
size (--time-dim, --time-batch) where the blocks' arithmetic sets the time rather than
Python's per-layer overhead. Goal: reversible flat in depth (within 10% from 8 to 128) at
<= 1.5x the standard step time.

    python bench/memory.py [--depths 8,32,128] [--dim 32] [--batch 256] [--repeats 5]
                           [--time-dim 256] [--time-batch 1024]
                           [--rules gd,heavy_ball,nesterov] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import functools
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
    # Two layers a group: a rule with two states per layer (Nesterov's x, y) keeps as
    # many tensors as the hand-written per-block checkpoint, which keeps each block input.
    "checkpointed 2": ("Checkpointed2", "checkpoint 2"),
    "reversible": ("Reversible", "backward reversible"),
}
HAND = ("hand-written", "hand-written, checkpoint per block")


def opt_text(rule: str, variant: str, depth: int) -> str:
    name, params, update = RULES[rule]
    suffix, declaration = GENERATED[variant]
    lines = [
        f"network {name}{suffix} {{",
        f"    state {STATES[rule]}",
        *(f"    {p}" for p in params),
        "    block T = mlp(hidden=2*dim, act=relu)",
        f"    layers {depth}",
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


@functools.cache  # the time size builds the deepest variants again: one compile each
def compiled_class(rule: str, variant: str, depth: int):
    """The module class of a generated variant declaring `layers depth` (the compiler
    checks that depth), or the compiler's reason it has none."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            classes = loads(opt_text(rule, variant, depth), f"{rule}_{variant}.opt")
        except OptgenError as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            return None, f"not available: {first}"
    note = "; ".join(str(w.message).splitlines()[0] for w in caught)
    return next(iter(classes.values())), (f"warned: {note}" if note else "")


def checkpointed_call(block, z):
    return torch.utils.checkpoint.checkpoint(block, z, use_reentrant=False)


def variants(rule: str, dim: int, depth: int, device: torch.device) -> list[Variant]:
    classes = {v: compiled_class(rule, v, depth) for v in GENERATED}
    standard_class = classes["standard"][0]

    def generated(cls):
        def build():
            torch.manual_seed(0)
            reference = standard_class(dim)
            torch.manual_seed(0)
            module = cls(dim)
            try:
                module.load_state_dict(reference.state_dict())
            except RuntimeError:
                pass  # other parameter names: the same seed gave the same weights
            return module.to(device)

        return build

    def hand(call):
        return lambda: HandWrittenNetwork(generated(standard_class)(), rule, call)

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


def measure_memory(found: list[Variant], args, device) -> dict:
    """Saved bytes, peaks and gradient differences of the variants at one depth."""
    torch.manual_seed(1)
    x = torch.randn(args.batch, args.dim, device=device)
    models = {v.name: v.build() for v in found if v.build}
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
    return figures


def measure_time(found: list[Variant], args, device) -> dict[str, float]:
    """Each variant's training step time over the standard one's (least of interleaved
    repeats), at the size the time is measured at (--time-dim, --time-batch)."""
    torch.manual_seed(1)
    x = torch.randn(args.time_batch, args.time_dim, device=device)
    steps = {}
    for v in found:
        if v.build is None:
            continue

        model = v.build()

        def step(model=model):
            model.zero_grad(set_to_none=False)
            model(x).square().mean().backward()

        steps[v.name] = step
    times = best_times(steps, device, args.repeats, warmup=1)
    return {name: t / times["standard"] for name, t in times.items()}


def merged_notes(notes: list[str]) -> str:
    """One variant's notes at every depth: each message once, in the order first seen."""
    warned = "warned: "
    messages = []
    for note in notes:
        parts = note[len(warned) :].split("; ") if note.startswith(warned) else [note]
        messages += [m for m in parts if m and m not in messages]
    if not messages or messages[0].startswith("not available: "):
        return "; ".join(messages)
    return warned + "; ".join(messages)


def kib(n: int) -> str:
    return f"{n / 1024:.1f}"


def row(rule: str, variant: Variant, by_depth: dict, times: dict, depths: list[int]) -> str:
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
    cells.append(f"{times[variant.name]:.2f}")
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
    cells += [f"step time / standard d{last} (time size)", "grad difference", "note"]
    return "| " + " | ".join(cells) + " |"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="8,32,128")
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--time-dim", type=int, default=256)
    parser.add_argument("--time-batch", type=int, default=1024)
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
        f"mlp blocks dim {args.dim} (hidden {2 * args.dim}), batch {args.batch}; memory in KiB;"
        f" step time at dim {args.time_dim}, batch {args.time_batch} (the time size),"
        f" least of {args.repeats} interleaved repeats"
    )
    print()
    print(header(depths))
    print("|" + "---|" * header(depths).count(" | ") + "---|")
    for rule in rules:
        built = {d: variants(rule, args.dim, d, device) for d in depths}
        by_depth = {d: measure_memory(built[d], args, device) for d in depths}
        # The time at a size where the blocks' arithmetic, not Python, sets it.
        timed = variants(rule, args.time_dim, depths[-1], device)
        times = measure_time(timed, args, device)
        for i, variant in enumerate(built[depths[-1]]):
            note = merged_notes([built[d][i].note for d in depths])
            variant = Variant(variant.name, variant.build, note)
            print(row(rule, variant, by_depth, times, depths), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
