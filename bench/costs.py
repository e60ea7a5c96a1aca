"""What counting a model's costs takes, and whether attention is in the count.

Two tables, measured side by side in one run:

- compile time against depth: `optgen.compile_source` of a one-stage heavy-ball model at
  depths 1 to 4,096 (CPU seconds, after a warm-up compile), beside the CPU time of
  counting every layer of the same model the way FLOPS used to be counted (a meta-device
  forward through all of them). Goal: the compile time does not grow with the depth (ratio
  to depth 1 about 1).
- attention: the ViT-like catalog model's FLOPS at three input sizes against the count by
  hand (patch embedding, the block's linears, attention's two matmuls, the classifier),
  and what torch's counter gives on the CPU's fused attention kernel. Goal: ratio 1.

    python bench/costs.py [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import optgen  # noqa: E402
from optgen.backend import costs  # noqa: E402

HEAVY_BALL = """
network HeavyBallStage {
    state x
    param t = 0.5
    param beta = 0.5 in [0, 1)
    block T = conv(hidden=dim)
    layers 3
    update { x+ = x - t*T(x) + beta*(x - x-) }
}
model Deep {
    input [3, 32, 32]
    stem conv(out=16, kernel=3)
    stage HeavyBallStage(dim=16, depth=DEPTH)
    head classifier(classes=10)
}
"""


def cpu_seconds(run) -> float:
    start = time.process_time()
    run()
    return time.process_time() - start


def compile_model(depth: int) -> dict[str, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return optgen.compile_source(HEAVY_BALL.replace("DEPTH", str(depth)), "deep.opt")


def every_layer_seconds(source: str) -> float:
    """The old way: the model built whole on meta and every layer run."""

    def run():
        model = costs.build_model(source, "Deep", "meta")
        costs.count_flops(model, (3, 32, 32))

    return cpu_seconds(run)


def depth_table(depths: list[int], whole_up_to: int) -> list[dict]:
    compile_model(1)  # torch's and black's start-up, paid once
    rows = []
    for depth in depths:
        outputs: dict[str, str] = {}
        seconds = cpu_seconds(lambda: outputs.update(compile_model(depth)))
        whole = every_layer_seconds(outputs["deep.py"]) if depth <= whole_up_to else None
        rows.append({"depth": depth, "compile_s": seconds, "every_layer_count_s": whole})
    for row in rows:
        row["ratio_to_depth_1"] = row["compile_s"] / rows[0]["compile_s"]
    return rows


def vit_by_hand(size: int, dim: int = 32, depth: int = 4, patch: int = 4) -> int:
    tokens = (size // patch) ** 2
    macs = 3 * patch * patch * dim * tokens  # patch embedding
    macs += depth * (12 * dim * dim * tokens + 2 * tokens * tokens * dim)  # blocks
    macs += dim * 10  # classifier
    return 2 * macs


def attention_table(sizes: list[int]) -> list[dict]:
    from torch.utils.flop_counter import FlopCounterMode

    text = (ROOT / "examples" / "models" / "isotropic.opt").read_text()
    rows = []
    for size in sizes:
        sized = text.replace("input [3, 32, 32]", f"input [3, {size}, {size}]")
        source = optgen.compile_source(sized, "isotropic.opt")["iso_vit_gd.py"]
        namespace: dict = {}
        exec(compile(source, "iso_vit_gd", "exec"), namespace)
        model = namespace["IsoVitGd"]().eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, 3, size, size))  # the CPU's own attention kernel
        by_hand = vit_by_hand(size)
        rows.append(
            {
                "input": size,
                "FLOPS": model.FLOPS,
                "MACS": model.MACS,
                "by_hand": by_hand,
                "ratio": model.FLOPS / by_hand,
                "cpu_kernel_count": counter.get_total_flops(),
                "cpu_kernel_ratio": counter.get_total_flops() / by_hand,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small depths and sizes")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    depths = [1, 32, 64] if args.quick else [1, 16, 64, 256, 1024, 4096]
    sizes = [32] if args.quick else [32, 64, 128]
    depth_rows = depth_table(depths, whole_up_to=64 if args.quick else 1024)
    print("| depth | compile (CPU s) | ratio to depth 1 | counting every layer (CPU s) |")
    print("|---|---|---|---|")
    for row in depth_rows:
        whole = row["every_layer_count_s"]
        print(
            f"| {row['depth']} | {row['compile_s']:.2f} | {row['ratio_to_depth_1']:.2f} | "
            + ("-" if whole is None else f"{whole:.2f}")
            + " |"
        )
    attention_rows = attention_table(sizes)
    print()
    print("| input | FLOPS | by hand | ratio | torch's count on the CPU kernel | its ratio |")
    print("|---|---|---|---|---|---|")
    for row in attention_rows:
        print(
            f"| {row['input']} | {row['FLOPS']:,} | {row['by_hand']:,} | {row['ratio']:.3f} | "
            f"{row['cpu_kernel_count']:,} | {row['cpu_kernel_ratio']:.3f} |"
        )
    if args.json:
        figures = {"depth": depth_rows, "attention": attention_rows, "torch": torch.__version__}
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
