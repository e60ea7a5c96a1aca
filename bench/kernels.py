"""What torch.compile makes of a generated model and of the same model written by hand:
the work of their compiled training steps, counted in inductor's output code.

bench/model.py times the compiled steps; at a few milliseconds a step, two equal programs
measure within about 5% of each other on a quiet machine and within 25% on a loaded one.
This bench says whether the programs are equal. For each case of bench/model.py (the
same models, weights and data), it compiles one training step (forward, loss, backward)
of each variant with `torch._inductor.utils.run_and_get_code` and counts, over the
generated C++ (CPU) or Triton (CUDA) kernels of forward and backward:

- kernels: the fused pointwise and reduction kernels inductor wrote;
- loads and stores: the memory accesses those kernels' source holds (a vectorized loop
  and its scalar tail each count; a proxy for the bytes they move, not the bytes);
- library calls: the calls of `extern_kernels` and aten (matmuls, convolutions,
  attention), and whether both variants make the same ones (as a multiset).

Equal library calls and no more kernels, loads or stores mean that the compiled
generated step does no more work than the hand-written one.

    python bench/kernels.py [--cases gd,nesterov] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field

# run_and_get_code leaves cache entries that a later compile of the same graph cannot load
# (a C++ compile error in torch 2.13): this process compiles into a cache of its own,
# removed at its end, and never reads one.
CACHE_DIR = tempfile.mkdtemp(prefix="optgen-bench-kernels-")
os.environ["TORCHINDUCTOR_CACHE_DIR"] = CACHE_DIR

import torch  # noqa: E402
import torch._inductor.config  # noqa: E402
from model import CASES, VARIANTS, build  # noqa: E402
from torch._inductor.utils import run_and_get_code  # noqa: E402

torch._inductor.config.fx_graph_cache = False

# One kernel's source: C++ inside `async_compile.cpp_pybinding(..., '''...''')`, Triton
# inside `async_compile.triton(..., '''...''')`.
KERNEL = re.compile(r"async_compile\.(?:cpp_pybinding|cpp|triton)\(.*?'''(.*?)'''", re.S)
LOAD = re.compile(r"\bin_(?:out_)?ptr\d+\[|::loadu\(|tl\.load\(")
STORE = re.compile(r"\b(?:out_ptr|in_out_ptr)\d+\[[^\]]*\]\s*=(?!=)|\.store\(|tl\.store\(")
LIBRARY = re.compile(r"\b(extern_kernels\.\w+|aten\.\w+(?:\.\w+)?)\(")


@dataclass
class Work:
    kernels: int = 0
    loads: int = 0
    stores: int = 0
    library: collections.Counter = field(default_factory=collections.Counter)

    @classmethod
    def of(cls, codes: list[str]) -> Work:
        bodies = [b for code in codes for b in KERNEL.findall(code)]
        library = collections.Counter(c for code in codes for c in LIBRARY.findall(code))
        return cls(
            kernels=len(bodies),
            loads=sum(len(LOAD.findall(b)) for b in bodies),
            stores=sum(len(STORE.findall(b)) for b in bodies),
            library=library,
        )


def compiled_work(stem: str, device: torch.device) -> dict[str, Work]:
    built = build(CASES[stem], device)
    found = {}
    for variant in VARIANTS:
        compiled = torch.compile(built.models[variant])

        def step(compiled=compiled):
            built.loss(compiled).backward()

        _, codes = run_and_get_code(step)  # resets dynamo first: a fresh compile
        found[variant] = Work.of(codes)
    return found


HEADER = (
    "| network | kernels gen / hand | loads gen / hand | stores gen / hand "
    "| library calls gen / hand | same library calls |"
)


def row(label: str, work: dict[str, Work]) -> str:
    g, h = work["generated"], work["hand-written"]
    cells = [
        label,
        f"{g.kernels} / {h.kernels}",
        f"{g.loads} / {h.loads}",
        f"{g.stores} / {h.stores}",
        f"{sum(g.library.values())} / {sum(h.library.values())}",
        "yes" if g.library == h.library else "no",
    ]
    return "| " + " | ".join(cells) + " |"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated stems")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    stems = args.cases.split(",")
    unknown = [s for s in stems if s not in CASES]
    if unknown:
        parser.error(f"unknown cases {unknown}; known: {', '.join(CASES)}")
    device = torch.device(args.device)
    print(f"device {device}, torch {torch.__version__}: the compiled training step's work")
    print()
    print(HEADER)
    print("|---" * HEADER.count(" | ") + "|---|")
    try:
        for stem in stems:
            print(row(CASES[stem].label, compiled_work(stem, device)), flush=True)
    finally:
        shutil.rmtree(CACHE_DIR, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
