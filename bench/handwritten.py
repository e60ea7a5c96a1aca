"""Generated staged models against the same architectures written by hand, timm-style:
the peak memory of inference, the training step time and the cold torch.compile time.

Two cases, each a model of examples/models/ and its hand-written twin:

- `deep_gd` (staged.opt): `DeepGd`, three gd stages of pre-activation conv blocks, against
  a ResNet written as timm writes its ResNet: a stem (conv, BatchNorm, ReLU), stages in an
  `nn.Sequential`, each a downsample (strided conv and BatchNorm) and its blocks, a block
  one operation a line ending in `return shortcut - x`; pooling, LayerNorm and Linear.
- `iso_convnext_gd` (isotropic.opt): `IsoConvnextGd`, one gd stage of ConvNeXt blocks,
  against a ConvNeXt written the same way (patchify stem, LayerNorm, the blocks
  `dwconv - permute - LayerNorm - Linear - GELU - Linear - permute`, one a line).

Equal architecture: the hand-written model has the same modules and parameters (its state
dict takes the generated one's, every key once), and its outputs are the generated ones
(checked, training and eval mode). A block ends as the rule x+ = x - t*T(x) (t = 1) does,
`shortcut - x`; with `--residual add` it ends as a ResNet's, `x + shortcut`, and the
weight copy negates the branch's last layer (-T(x) is T with its last layer's weights
and bias negated, exactly), so the outputs are still equal (`copy_weights`).

Per case, ratios generated / hand-written:

- inference peak: the peak memory of one forward under no_grad in eval mode, on CPU the
  peak of live tensor bytes (bench/common.py: PeakTensorBytes, a TorchDispatchMode that
  counts each storage an operator creates until it is freed: a count of bytes that does
  not depend on the allocator or the load, so it is asserted in tests/test_bench.py), on
  CUDA the caching allocator's peak; also the peak of a training step (forward and
  backward) the same way;
- step time: a training step (forward, cross-entropy, backward, SGD step), `--rounds`
  rounds of `--repeats` interleaved calls each (bench/common.py: interleaved_times), the
  median of each round; the ratio of the generated median to the hand-written one's, and
  as the spread the same ratio for a second hand-written copy (same weights, own
  parameters) against the first: how far two identical models time apart here. "within"
  when the generated ratio's median is at most the largest hand-written/hand-written
  ratio;
- compile time: the first compiled training step, cold, in a fresh process per compile
  (an empty TORCHINDUCTOR_CACHE_DIR, inductor's start-up paid before on a one-line
  function, TORCHINDUCTOR_COMPILE_THREADS=1 so that the work stays in the process and the
  C++ compilers it waits for): its CPU time (user + system, the process and those
  children), which a loaded machine inflates far less than the wall clock. `--compile-
  repeats` compiles per variant, the variants alternating which goes first; the ratio of
  medians, and the spread of the hand-written compiles (least and largest over their
  median). "within" when the generated median lies at most at the largest hand-written one.

    python bench/handwritten.py [--cases deep_gd,iso_convnext_gd] [--batch 32]
                                [--residual sub|add] [--rounds 5] [--repeats 20]
                                [--compile-repeats 5] [--no-compile] [--quick]
                                [--json FILE] [--device cpu|cuda]

`--quick` is the smoke test's size (batch 2, 2 rounds of 2 repeats, 1 compile each).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from common import interleaved_times, load_generated, peak_bytes, sync
from torch import Tensor, nn

# The hand-written models: timm's layout (stem, stages, head; downsample then blocks in a
# stage), one operation a line, each result rebinding `x`.


class PreActBasicBlock(nn.Module):
    """Pre-activation basic block: BN-ReLU-conv twice, subtracted from the shortcut
    (`subtract=False`: added to it)."""

    def __init__(self, dim: int, hidden: int, subtract: bool = True) -> None:
        super().__init__()
        self.subtract = subtract
        self.bn1 = nn.BatchNorm2d(dim)
        self.act1 = nn.ReLU()
        self.conv1 = nn.Conv2d(dim, hidden, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.act2 = nn.ReLU()
        self.conv2 = nn.Conv2d(hidden, dim, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.bn1(x)
        x = self.act1(x)
        x = self.conv1(x)
        x = self.bn2(x)
        x = self.act2(x)
        x = self.conv2(x)
        return shortcut - x if self.subtract else x + shortcut


class ConvNeXtBlock(nn.Module):
    """ConvNeXt block: depthwise conv, LayerNorm, inverted bottleneck, subtracted from
    the shortcut (`subtract=False`: added to it)."""

    def __init__(self, dim: int, kernel: int = 7, expand: int = 4, subtract: bool = True) -> None:
        super().__init__()
        self.subtract = subtract
        self.conv_dw = nn.Conv2d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, expand * dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(expand * dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.conv_dw(x)
        x = x.permute(0, 2, 3, 1)
        x = self.norm(x)
        x = self.fc1(x)
        x = self.act(x)
        x = self.fc2(x)
        x = x.permute(0, 3, 1, 2)
        return shortcut - x if self.subtract else x + shortcut


class Stage(nn.Module):
    """A downsample (none in the first stage), then the blocks."""

    def __init__(self, downsample: nn.Module | None, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.downsample = downsample if downsample is not None else nn.Identity()
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        x = self.downsample(x)
        x = self.blocks(x)
        return x


class ResNet(nn.Module):
    """Pre-activation ResNet: conv stem, stages at halving resolution, pooled head."""

    def __init__(
        self,
        widths=(16, 32, 64),
        depth: int = 3,
        num_classes: int = 10,
        in_chans: int = 3,
        subtract: bool = True,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.act1 = nn.ReLU()
        stages = []
        for i, width in enumerate(widths):
            downsample = None
            if i > 0:
                downsample = nn.Sequential(
                    nn.Conv2d(widths[i - 1], width, 3, stride=2, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                )
            blocks = [PreActBasicBlock(width, width, subtract) for _ in range(depth)]
            stages.append(Stage(downsample, blocks))
        self.stages = nn.Sequential(*stages)
        self.norm = nn.LayerNorm(widths[-1])
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.act1(x)
        x = self.stages(x)
        return x

    def forward_head(self, x: Tensor) -> Tensor:
        x = x.mean(dim=(2, 3))
        x = self.norm(x)
        return self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        x = self.forward_features(x)
        x = self.forward_head(x)
        return x


class ConvNeXt(nn.Module):
    """Isotropic ConvNeXt: patchify stem with LayerNorm, one stage, pooled head."""

    def __init__(
        self,
        dim: int = 32,
        depth: int = 4,
        patch: int = 4,
        num_classes: int = 10,
        in_chans: int = 3,
        subtract: bool = True,
    ) -> None:
        super().__init__()
        self.stem_conv = nn.Conv2d(in_chans, dim, patch, stride=patch)
        self.stem_norm = nn.LayerNorm(dim)
        blocks = [ConvNeXtBlock(dim, subtract=subtract) for _ in range(depth)]
        self.stages = nn.Sequential(Stage(None, blocks))
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.stem_conv(x)
        x = x.permute(0, 2, 3, 1)
        x = self.stem_norm(x)
        x = x.permute(0, 3, 1, 2)
        x = self.stages(x)
        return x

    def forward_head(self, x: Tensor) -> Tensor:
        x = x.mean(dim=(2, 3))
        x = self.norm(x)
        return self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        x = self.forward_features(x)
        x = self.forward_head(x)
        return x


# The generated state dict's names in the hand-written models: (pattern, replacement),
# the first that matches; `\g<next>` is the transition's index plus one (the stage it
# opens).
RESNET_NAMES = [
    (r"stem\.conv\.", "conv1."),
    (r"stem\.norm\.", "bn1."),
    (r"stages\.(\d+)\.blocks\.T\.(\d+)\.", r"stages.\1.blocks.\2."),
    (r"transitions\.(\d+)\.conv\.", r"stages.\g<next>.downsample.0."),
    (r"transitions\.(\d+)\.norm\.", r"stages.\g<next>.downsample.1."),
    (r"head\.", ""),
]
CONVNEXT_NAMES = [
    (r"stem\.conv\.", "stem_conv."),
    (r"stem\.norm\.", "stem_norm."),
    (r"stages\.0\.blocks\.T\.(\d+)\.dwconv\.", r"stages.0.blocks.\1.conv_dw."),
    (r"stages\.0\.blocks\.T\.(\d+)\.", r"stages.0.blocks.\1."),
    (r"head\.", ""),
]


@dataclass(frozen=True)
class Case:
    label: str
    stem: str  # generated/<stem>.py
    class_name: str
    hand: type
    names: list  # RESNET_NAMES or CONVNEXT_NAMES
    last: str  # the branch's last layer (its weights change sign for `--residual add`)


CASES = {
    case.stem: case
    for case in (
        Case("deep_gd (staged.opt) vs ResNet", "deep_gd", "DeepGd", ResNet, RESNET_NAMES, "conv2"),
        Case(
            "iso_convnext_gd (isotropic.opt) vs ConvNeXt",
            "iso_convnext_gd",
            "IsoConvnextGd",
            ConvNeXt,
            CONVNEXT_NAMES,
            "fc2",
        ),
    )
}


def hand_name(name: str, names: list) -> str:
    for pattern, replacement in names:
        found = re.match(pattern, name)
        if found:
            if "\\g<next>" in replacement:
                replacement = replacement.replace("\\g<next>", str(int(found.group(1)) + 1))
            return found.expand(replacement) + name[found.end() :]
    raise KeyError(f"no hand-written name for {name}")


def copy_weights(generated: nn.Module, hand: nn.Module, case: Case) -> None:
    """The generated model's parameters and buffers into the hand-written one (strict:
    every key of each once); for a hand-written `x + shortcut`, the blocks' last layer
    negated: x - T(x) = x + (-T)(x)."""
    state = {}
    add = not hand.stages[0].blocks[0].subtract
    for name, value in generated.state_dict().items():
        if add and f".{case.last}." in name and ".blocks." in name:
            value = -value
        state[hand_name(name, case.names)] = value
    hand.load_state_dict(state, strict=True)


def build(case: Case, device: torch.device, residual: str = "sub") -> dict[str, nn.Module]:
    """The generated model, its hand-written twin, and a second hand-written copy."""
    if device.type == "cuda":
        # TF32 would round the two apart where their operators differ (--residual add).
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    generated = load_generated(case.stem, case.class_name)().to(device)
    hand = case.hand(subtract=residual == "sub").to(device)
    copy_weights(generated, hand, case)
    return {"generated": generated, "hand-written": hand, "hand-written again": copy.deepcopy(hand)}


def check_equal(models: dict[str, nn.Module], x: Tensor) -> float:
    """The largest difference of the outputs, eval and training mode (asserted small)."""
    generated, hand = models["generated"], models["hand-written"]
    largest = 0.0
    with torch.no_grad():
        for training in (False, True):
            generated.train(training)
            hand.train(training)
            largest = max(largest, (generated(x) - hand(x)).abs().max().item())
    assert largest < 1e-5, f"generated and hand-written outputs differ by {largest}"
    return largest


def inference_peak(model: nn.Module, x: Tensor, device: torch.device) -> int:
    model.eval()

    def forward():
        with torch.no_grad():
            model(x)

    return peak_bytes(forward, device)


def train_step(model: nn.Module, x: Tensor, target: Tensor):
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

    def step():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), target).backward()
        optimizer.step()

    return step


def data(batch: int, device: torch.device) -> tuple[Tensor, Tensor]:
    torch.manual_seed(1)
    x = torch.randn(batch, 3, 32, 32, device=device)
    return x, torch.randint(0, 10, (batch,), device=device)


# The fresh process of one cold compile.


def cpu_seconds() -> float:
    """User + system CPU time of this process and of the children it has waited for."""
    own, children = (
        resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def child(stem: str, variant: str, batch: int, residual: str, device: torch.device) -> dict:
    from torch._dynamo.utils import counters

    # Inductor's one-time start-up (imports, its C++ toolchain checks) is not the model's.
    torch.compile(lambda a: a + 1)(torch.ones(2, device=device))
    torch._dynamo.reset()
    counters.clear()
    model = build(CASES[stem], device, residual)[variant]
    x, target = data(batch, device)
    step = train_step(torch.compile(model), x, target)
    sync(device)
    cpu, wall = cpu_seconds(), time.perf_counter()
    step()
    sync(device)
    return {
        "cpu_s": cpu_seconds() - cpu,
        "wall_s": time.perf_counter() - wall,
        "graph_breaks": sum(counters["graph_break"].values()),
    }


def run_child(stem: str, variant: str, batch: int, residual: str, device: torch.device) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"optgen-handwritten-{stem}-") as cache:
        env = {
            **os.environ,
            "TORCHINDUCTOR_CACHE_DIR": cache,
            "TORCHINDUCTOR_COMPILE_THREADS": "1",
        }
        command = [
            *(sys.executable, __file__, "--child", stem, variant),
            *("--batch", str(batch), "--residual", residual, "--device", str(device)),
        ]
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"{stem} {variant}: compile subprocess failed\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def cold_compiles(
    stem: str, batch: int, residual: str, device: torch.device, repeats: int
) -> dict[str, list]:
    """Each variant's cold compiles, the two taking turns at going first."""
    variants = ("generated", "hand-written")
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for r in range(repeats):
        for variant in variants if r % 2 == 0 else variants[::-1]:
            runs[variant].append(run_child(stem, variant, batch, residual, device))
    return runs


# The figures.


def spread(values: list[float], middle: float) -> list[float]:
    """The least and largest of `values` over `middle`."""
    return [min(values) / middle, max(values) / middle]


def step_times(models: dict, x: Tensor, target: Tensor, device, rounds: int, repeats: int):
    steps = {name: train_step(model, x, target) for name, model in models.items()}
    medians = {name: [] for name in steps}
    for _ in range(rounds):
        times = interleaved_times(steps, device, repeats)
        for name, seconds in times.items():
            medians[name].append(statistics.median(seconds))
    generated = [g / h for g, h in zip(medians["generated"], medians["hand-written"])]
    again = [a / h for a, h in zip(medians["hand-written again"], medians["hand-written"])]
    ratio = statistics.median(generated)
    return {
        "generated_ms": 1e3 * statistics.median(medians["generated"]),
        "hand_ms": 1e3 * statistics.median(medians["hand-written"]),
        "ratio": ratio,
        "ratio_range": [min(generated), max(generated)],
        "hand_spread": [min(again), max(again)],
        "within": ratio <= max(again),
    }


def compile_times(runs: dict[str, list]) -> dict:
    generated = [run["cpu_s"] for run in runs["generated"]]
    hand = [run["cpu_s"] for run in runs["hand-written"]]
    middle = statistics.median(hand)
    return {
        "generated_cpu_s": statistics.median(generated),
        "hand_cpu_s": middle,
        "ratio": statistics.median(generated) / middle,
        "generated_spread": spread(generated, middle),
        "hand_spread": spread(hand, middle),
        "within": statistics.median(generated) <= max(hand),
        "generated_wall_s": statistics.median(run["wall_s"] for run in runs["generated"]),
        "hand_wall_s": statistics.median(run["wall_s"] for run in runs["hand-written"]),
        "graph_breaks": [
            max(run["graph_breaks"] for run in runs[v]) for v in ("generated", "hand-written")
        ],
        "repeats": len(generated),
    }


def measure(case: Case, args, device: torch.device) -> dict:
    models = build(case, device, args.residual)
    x, target = data(args.batch, device)
    difference = check_equal(models, x)
    pair = {v: models[v] for v in ("generated", "hand-written")}
    inference = {v: inference_peak(m, x, device) for v, m in pair.items()}
    training = {v: peak_bytes(train_step(m, x, target), device) for v, m in pair.items()}
    found = {
        "case": case.label,
        "parameters": sum(p.numel() for p in models["generated"].parameters()),
        "max_difference": difference,
        "inference_peak": {
            **inference,
            "ratio": inference["generated"] / inference["hand-written"],
        },
        "train_peak": {**training, "ratio": training["generated"] / training["hand-written"]},
        "step": step_times(models, x, target, device, args.rounds, args.repeats),
        "compile": None,
    }
    if args.compile_repeats > 0:
        runs = cold_compiles(case.stem, args.batch, args.residual, device, args.compile_repeats)
        found["compile"] = compile_times(runs)
    return found


def kib(n: int) -> str:
    return f"{n / 1024:.0f}"


def span(pair: list[float]) -> str:
    return f"{pair[0]:.3f}-{pair[1]:.3f}"


HEADER = (
    "| case | inference peak KiB gen / hand | inference peak ratio | train peak ratio "
    "| step ms gen / hand | step ratio (range) | hand / hand | step within "
    "| compile CPU s gen / hand | compile ratio | gen spread | hand spread | compile within "
    "| graph breaks gen/hand |"
)


def row(found: dict) -> str:
    peak, step, comp = found["inference_peak"], found["step"], found["compile"]
    cells = [
        found["case"],
        f"{kib(peak['generated'])} / {kib(peak['hand-written'])}",
        f"{peak['ratio']:.3f}",
        f"{found['train_peak']['ratio']:.3f}",
        f"{step['generated_ms']:.2f} / {step['hand_ms']:.2f}",
        f"{step['ratio']:.3f} ({span(step['ratio_range'])})",
        span(step["hand_spread"]),
        "yes" if step["within"] else "no",
    ]
    if comp is None:
        cells += ["-"] * 6
    else:
        cells += [
            f"{comp['generated_cpu_s']:.1f} / {comp['hand_cpu_s']:.1f}",
            f"{comp['ratio']:.3f}",
            span(comp["generated_spread"]),
            span(comp["hand_spread"]),
            "yes" if comp["within"] else "no",
            "/".join(str(n) for n in comp["graph_breaks"]),
        ]
    return "| " + " | ".join(cells) + " |"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated stems")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument(
        "--residual",
        choices=("sub", "add"),
        default="sub",
        help="hand-written blocks end in shortcut - x (the rule), or x + shortcut",
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=20, help="interleaved calls a round")
    parser.add_argument("--compile-repeats", type=int, default=5, help="cold compiles each")
    parser.add_argument("--no-compile", action="store_true", help="no compile columns")
    parser.add_argument("--quick", action="store_true", help="the smoke test's size")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--child", nargs=2, metavar=("STEM", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.child:
        print(json.dumps(child(*args.child, args.batch, args.residual, device)))
        return 0
    if args.quick:
        args.batch, args.rounds, args.repeats, args.compile_repeats = 2, 2, 2, 1
    if args.no_compile:
        args.compile_repeats = 0
    stems = args.cases.split(",")
    unknown = [stem for stem in stems if stem not in CASES]
    if unknown:
        parser.error(f"unknown cases {unknown}; known: {', '.join(CASES)}")
    print(
        f"device {device} ({torch.get_num_threads()} threads), torch {torch.__version__},"
        f" batch {args.batch}, hand-written residual {args.residual}; step: {args.rounds} rounds of {args.repeats} interleaved"
        f" repeats; compile: {args.compile_repeats} cold compiles each (CPU time);"
        " ratios are generated / hand-written"
    )
    print()
    print(HEADER)
    print("|" + "---|" * HEADER.count(" | ") + "---|")
    results = []
    for stem in stems:
        found = measure(CASES[stem], args, device)
        results.append(found)
        print(row(found), flush=True)
    if args.json:
        settings = {k: v for k, v in vars(args).items() if k not in ("json", "child")}
        summary = {
            "device": str(device),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "settings": settings,
            "cases": results,
        }
        args.json.write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
