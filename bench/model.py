"""A whole training step of generated modules against a hand-written reference.

The reference is the same network as a researcher would write it (ordinary operators),
built on the generated module's own blocks and parameters, so that both compute the
same function. Reports the time ratio (median of interleaved repeats) and the ratio of
memory a step holds (bytes autograd saves; on CUDA also the allocator's peak).

    python bench/model.py [--repeats 20] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F
from common import load_generated, median_times, saved_bytes


class HandWrittenNesterov(torch.nn.Module):
    """x+ = y - t*T(y); y = x+ + beta*(x+ - x), as typed by hand."""

    def __init__(self, generated: torch.nn.Module, beta: float = 0.9):
        super().__init__()
        self.generated = generated  # for its blocks and t_raw only
        self.beta = beta

    def forward(self, x):
        t = F.softplus(self.generated.t_raw)
        y = x
        for k in range(self.generated.depth):
            x_next = y - t * self.generated.blocks["T"][k](y)
            y = x_next + self.beta * (x_next - x)
            x = x_next
        return x


CASES = {
    "nesterov (mlp)": ("nesterov", "Nesterov", 256, lambda dim: (512, dim)),
    "nesterov_conv": ("nesterov_conv", "NesterovConv", 32, lambda dim: (16, dim, 16, 16)),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    print(
        f"device {device} ({torch.get_num_threads()} threads), torch {torch.__version__}, median of {args.repeats} interleaved repeats"
    )
    print()
    print(
        "| network | generated step (ms) | hand-written step (ms) | time ratio | saved bytes ratio | CUDA peak ratio |"
    )
    print("|---|---|---|---|---|---|")
    for label, (stem, class_name, dim, shape) in CASES.items():
        torch.manual_seed(0)
        generated = load_generated(stem, class_name)(dim, depth=8).to(device)
        reference = HandWrittenNesterov(generated).to(device)
        x = torch.randn(*shape(dim), device=device)
        target = torch.randn_like(x)
        with torch.no_grad():
            assert torch.allclose(generated(x), reference(x), rtol=1e-4, atol=1e-4)

        def step(model):
            def run():
                generated.zero_grad(set_to_none=True)
                loss = (model(x) - target).square().mean()
                loss.backward()

            return run

        times = median_times(
            {"generated": step(generated), "reference": step(reference)}, device, args.repeats
        )
        memory = {
            name: saved_bytes(lambda m=model: (m(x) - target).square().mean())
            for name, model in (("generated", generated), ("reference", reference))
        }
        peak = "n/a (no GPU)"
        if device.type == "cuda":
            peaks = {}
            for name, model in (("generated", generated), ("reference", reference)):
                torch.cuda.reset_peak_memory_stats()
                step(model)()
                peaks[name] = torch.cuda.max_memory_allocated()
            peak = f"{peaks['generated'] / peaks['reference']:.3f}"
        print(
            f"| {label} | {1e3 * times['generated']:.2f} | {1e3 * times['reference']:.2f} | "
            f"{times['generated'] / times['reference']:.3f} | {memory['generated'] / memory['reference']:.3f} | {peak} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
