"""Whole training steps of generated modules against the same models written by hand,
eager and under torch.compile.

A step is forward, loss, backward and an SGD step. The hand-written reference is the
same network as a researcher types it (ordinary operators, bench/common.py), built on the
generated module's own blocks and parameters, so both compute the same function (checked
before timing). Per case:

- eager and compiled steady-state step time: the least of interleaved repeats, one run
  (bench/common.py: best_times);
- compile time: the first compiled step, cold, in a fresh subprocess per variant
  (`torch._dynamo.reset()`, an empty TORCHINDUCTOR_CACHE_DIR, inductor's start-up paid
  before on a one-line function); with --compile-repeats N, the least of N such
  compiles, the variants alternating which goes first;
- graph breaks of the compiled step (dynamo's counter; goal 0);
- memory: bytes saved for backward, the peak memory of an eager step (CUDA's allocator
  peak, live tensor bytes on CPU) and the peak of a compiled step (allocator peak on CUDA,
  VmHWM growth of the fresh subprocess on CPU).

Goals: compiled step <= 1.0x, compile time <= 1.0x, eager step <= 1.02x the hand-written
ones; memory <= the hand-written one's.

    python bench/model.py [--repeats 10] [--device cpu|cuda] [--cases nesterov,gd]
                          [--no-compile] [--compile-repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from common import (
    HandWrittenModel,
    HandWrittenNetwork,
    best_times,
    load_generated,
    peak_bytes,
    release_free_memory,
    saved_bytes,
    sync,
)


@dataclass(frozen=True)
class Case:
    label: str
    stem: str  # generated/<stem>.py
    class_name: str
    rule: str  # a key of common.HAND_RULES
    args: tuple  # the generated constructor's arguments
    input_shape: tuple
    classifier: bool = False  # a staged model of examples/models (cross-entropy loss)


CASES = {
    case.stem: case
    for case in (
        Case("gd (mlp)", "gd", "GD", "gd", (64, 4), (128, 64)),
        Case("heavy_ball (mlp)", "heavy_ball", "HeavyBall", "heavy_ball", (64, 4), (128, 64)),
        Case("nesterov (mlp)", "nesterov", "Nesterov", "nesterov", (64, 4), (128, 64)),
        Case(
            "nesterov_conv", "nesterov_conv", "NesterovConv", "nesterov", (16, 4), (8, 16, 16, 16)
        ),
        Case(
            "nesterov_convnext",
            "nesterov_convnext",
            "NesterovConvnext",
            "nesterov",
            (16, 4),
            (8, 16, 16, 16),
        ),
        Case(
            "nesterov_transformer",
            "nesterov_transformer",
            "NesterovTransformer",
            "nesterov",
            (32, 4),
            (8, 16, 32),
        ),
        Case(
            "deep_nesterov (staged.opt)",
            "deep_nesterov",
            "DeepNesterov",
            "nesterov",
            (),
            (8, 3, 32, 32),
            classifier=True,
        ),
        Case(
            "iso_vit_apg2 (isotropic.opt)",
            "iso_vit_apg2",
            "IsoVitApg2",
            "apg2",
            (),
            (8, 3, 32, 32),
            classifier=True,
        ),
    )
}

VARIANTS = ("generated", "hand-written")
CACHE_DIRS: list[str] = []  # the fresh inductor caches of this run, removed at its end


@dataclass
class Built:
    """One case, both variants on the same parameters, and its data."""

    models: dict
    optimizer: torch.optim.Optimizer
    x: torch.Tensor
    target: torch.Tensor
    classifier: bool

    def loss(self, model):
        out = model(self.x)
        if self.classifier:
            return F.cross_entropy(out, self.target)
        return (out - self.target).square().mean()

    def step(self, model):
        def run():
            self.optimizer.zero_grad(set_to_none=True)
            self.loss(model).backward()
            self.optimizer.step()

        return run


def build(case: Case, device: torch.device) -> Built:
    if device.type == "cuda":
        # TF32 convolutions would round the two variants' inputs apart (the update's
        # operators differ): the equality check needs float32 throughout.
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    generated = load_generated(case.stem, case.class_name)(*case.args).to(device)
    hand_class = HandWrittenModel if case.classifier else HandWrittenNetwork
    reference = hand_class(generated, case.rule).to(device)
    x = torch.randn(*case.input_shape, device=device)
    if case.classifier:
        target = torch.randint(0, 10, (case.input_shape[0],), device=device)
    else:
        target = torch.randn_like(x)
    # Plain SGD: the optimizer's cost is the same for both, the forward/backward differ.
    optimizer = torch.optim.SGD(generated.parameters(), lr=1e-3)
    models = {"generated": generated, "hand-written": reference}
    return Built(models, optimizer, x, target, case.classifier)


def max_difference(a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return (a(x) - b(x)).abs().max().item()


# The fresh subprocess: compile time, graph breaks and compiled peak of one variant.


def rss_kib(field: str) -> int:
    status = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+)", status).group(1))


def reset_high_water_mark() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def process_peak(step, device: torch.device) -> int | None:
    """Peak memory of one step: the allocator's on CUDA, the VmHWM growth on CPU."""
    if device.type == "cuda":
        return peak_bytes(step, device)
    release_free_memory()
    if not reset_high_water_mark():
        return None
    before = rss_kib("VmRSS")
    step()
    return 1024 * (rss_kib("VmHWM") - before)


def child(stem: str, variant: str, device: torch.device) -> dict:
    from torch._dynamo.utils import counters

    # Inductor's one-time start-up (imports, worker pool) is not this model's compile.
    torch.compile(lambda a: a + 1)(torch.ones(2, device=device))
    torch._dynamo.reset()
    counters.clear()
    built = build(CASES[stem], device)
    compiled = torch.compile(built.models[variant])
    step = built.step(compiled)
    sync(device)
    start = time.perf_counter()
    step()
    sync(device)
    compile_s = time.perf_counter() - start
    step()  # the allocator's first-step effects out of the peak
    return {
        "compile_s": compile_s,
        "graph_breaks": sum(counters["graph_break"].values()),
        "graphs": counters["stats"]["unique_graphs"],
        "compiled_peak": process_peak(step, device),
    }


def run_child(stem: str, variant: str, device: torch.device, cache_dir: str) -> dict:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache_dir}
    command = [sys.executable, __file__, "--child", stem, variant, "--device", str(device)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"{stem} {variant}: compile subprocess failed\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# The table.


def ratio(a, b) -> str:
    return "-" if a is None or b is None or not b else f"{a / b:.3f}"


def ms(seconds) -> str:
    return "-" if seconds is None else f"{1e3 * seconds:.2f}"


HEADER = (
    "| network | eager gen (ms) | eager hand (ms) | eager ratio | compiled gen (ms) "
    "| compiled hand (ms) | compiled ratio | compile gen (s) | compile hand (s) "
    "| compile ratio | graph breaks gen/hand | saved bytes ratio | eager peak ratio "
    "| compiled peak ratio | max difference |"
)


def cold_compiles(stem: str, device: torch.device, repeats: int) -> dict[str, dict]:
    """Each variant's cold compile, `repeats` times in alternating order (generated first,
    then hand-written first, ...), each in a fresh process with an empty cache: the least
    compile time, the first run's other figures and its cache."""
    runs: dict[str, list[dict]] = {variant: [] for variant in VARIANTS}
    for r in range(repeats):
        for variant in VARIANTS if r % 2 == 0 else VARIANTS[::-1]:
            cache_dir = tempfile.mkdtemp(prefix=f"optgen-bench-{stem}-")
            CACHE_DIRS.append(cache_dir)
            runs[variant].append(
                {**run_child(stem, variant, device, cache_dir), "cache_dir": cache_dir}
            )
    return {
        variant: {**found[0], "compile_s": min(run["compile_s"] for run in found)}
        for variant, found in runs.items()
    }


def measure(
    case: Case, device: torch.device, repeats: int, compile_too: bool, compile_repeats: int = 1
) -> str:
    built = build(case, device)
    gen, ref = built.models["generated"], built.models["hand-written"]
    difference = max_difference(gen, ref, built.x)
    assert difference < 1e-4, f"{case.label}: generated and hand-written differ by {difference}"
    steps = {f"eager {v}": built.step(m) for v, m in built.models.items()}
    children = {}
    if compile_too:
        children = cold_compiles(case.stem, device, compile_repeats)
        for variant in VARIANTS:
            cache_dir = children[variant]["cache_dir"]
            # Compiled here on the child's warm cache: the steady state, timed below.
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache_dir
            compiled = torch.compile(built.models[variant])
            built.step(compiled)()
            steps[f"compiled {variant}"] = built.step(compiled)
            if variant == "generated":
                difference = max(difference, max_difference(compiled, ref, built.x))
    times = best_times(steps, device, repeats)
    saved = {v: saved_bytes(lambda m=m: built.loss(m)) for v, m in built.models.items()}
    peak = {v: peak_bytes(built.step(m), device) for v, m in built.models.items()}
    cg, ch = children.get("generated", {}), children.get("hand-written", {})
    breaks = f"{cg['graph_breaks']}/{ch['graph_breaks']}" if children else "-"
    cells = [
        case.label,
        ms(times["eager generated"]),
        ms(times["eager hand-written"]),
        ratio(times["eager generated"], times["eager hand-written"]),
        ms(times.get("compiled generated")),
        ms(times.get("compiled hand-written")),
        ratio(times.get("compiled generated"), times.get("compiled hand-written")),
        f"{cg['compile_s']:.1f}" if children else "-",
        f"{ch['compile_s']:.1f}" if children else "-",
        ratio(cg.get("compile_s"), ch.get("compile_s")),
        breaks,
        ratio(saved["generated"], saved["hand-written"]),
        ratio(peak["generated"], peak["hand-written"]),
        ratio(cg.get("compiled_peak"), ch.get("compiled_peak")),
        f"{difference:.1e}",
    ]
    return "| " + " | ".join(cells) + " |"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated stems")
    parser.add_argument("--no-compile", action="store_true", help="eager columns only")
    parser.add_argument(
        "--compile-repeats", type=int, default=1, help="cold compiles per variant (the least)"
    )
    parser.add_argument("--child", nargs=2, metavar=("STEM", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.child:
        print(json.dumps(child(*args.child, device)))
        return 0
    unknown = [stem for stem in args.cases.split(",") if stem not in CASES]
    if unknown:
        parser.error(f"unknown cases {unknown}; known: {', '.join(CASES)}")
    print(
        f"device {device} ({torch.get_num_threads()} threads), torch {torch.__version__}, "
        f"least of {args.repeats} interleaved repeats, compile time the least of"
        f" {args.compile_repeats} cold compiles; ratios are generated / hand-written"
    )
    print()
    print(HEADER)
    print("|" + "---|" * HEADER.count(" | ") + "---|")
    failed = 0
    for stem in args.cases.split(","):
        try:
            figures = measure(
                CASES[stem], device, args.repeats, not args.no_compile, args.compile_repeats
            )
            print(figures, flush=True)
        except (AssertionError, RuntimeError) as error:  # the other cases still run
            failed += 1
            print(f"| {CASES[stem].label} | failed: {str(error).splitlines()[0]} |", flush=True)
            print(error, file=sys.stderr)
    for cache_dir in CACHE_DIRS:
        shutil.rmtree(cache_dir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
