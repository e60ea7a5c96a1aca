"""The full fuzz campaign: generated programs and mutations of the catalog.

    python bench/fuzz.py --cases 10000 [--seed 0] [--run-fraction 0.05]

Three kinds of case in turn: generated programs, mutations of the catalog, and (issue 16)
hostile shapes: separator runs, long sums, extreme numbers, reserved names, colliding
names, custom-block argument keys, a BOM and odd line breaks in comments, a tenth of them
written through a file system that fails part-way.

Properties (issue 7): compile_source returns sources or raises OptgenError with a line
and column inside the text, nothing else; every source is valid Python, black-clean and
imports only torch and the standard library; every module of a compiled case imports and
its class constructs (issue 16); a sample of the valid programs runs forward, passes
gradcheck and passes every test of its generated test file; no input takes more than 2 s
to reject. Prints the figures that
docs/robustness.md records.
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import tempfile
import time
import traceback
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fuzzing import (  # noqa: E402
    catalog_texts,
    check_compile,
    check_runs,
    generate_program,
    hostile_program,
    load_modules,
    mutate,
    run_generated_tests,
    write_with_failures,
)

import optgen  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-fraction", type=float, default=0.05)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    rng = random.Random(args.seed)
    texts = catalog_texts()
    counts = {
        "generated": 0,
        "mutated": 0,
        "hostile": 0,
        "written through failures": 0,
        "compiled": 0,
        "rejected": 0,
        "constructed": 0,
        "ran": 0,
        "generated test files run": 0,
        "crashes": 0,
        "slow_rejections": 0,
    }
    slowest_rejection = 0.0
    slowest_case = 0.0  # CPU seconds
    slowest_text = ""
    largest_case = 0  # bytes, tracemalloc peak of one hostile case
    failures = []
    start = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="optgen-fuzz-"))
    for case in range(args.cases):
        kind = ("generated", "mutated", "hostile")[case % 3]
        generated = kind == "generated"
        if kind == "hostile":
            text = hostile_program(rng)
        else:
            text = generate_program(rng) if generated else mutate(rng, rng.choice(texts))
        counts[kind] += 1
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        measured = kind == "hostile"
        if measured:
            tracemalloc.start()
        try:
            outputs = check_compile(text)
            elapsed = time.perf_counter() - t0
            cpu = time.process_time() - cpu0
            if cpu > slowest_case:
                slowest_case, slowest_text = cpu, text
            if measured:
                largest_case = max(largest_case, tracemalloc.get_traced_memory()[1])
                tracemalloc.stop()
                measured = False
            if kind == "hostile" and counts["hostile"] % 10 == 0:
                folder = scratch / str(case)
                folder.mkdir()
                write_with_failures(rng, text, folder)
                counts["written through failures"] += 1
            if outputs is None:
                counts["rejected"] += 1
                slowest_rejection = max(slowest_rejection, elapsed)
                if elapsed > 2.0:
                    counts["slow_rejections"] += 1
                    failures.append(("slow rejection", f"{elapsed:.2f}s", text))
                    print(f"=== slow rejection at case {case}: {text[:2000]!r}", file=sys.stderr)
            else:
                counts["compiled"] += 1
                # Every module of an exit-0 compile imports and constructs.
                loaded = load_modules(outputs)
                counts["constructed"] += len(loaded)
                if kind != "mutated" and rng.random() < args.run_fraction:
                    check_runs(outputs)
                    counts["ran"] += 1
                    # and passes its own generated tests, all of them.
                    for name, module in loaded.items():
                        run_generated_tests(outputs, name, module)
                        counts["generated test files run"] += 1
        except Exception:  # noqa: BLE001 - every escape is a finding
            if measured:
                tracemalloc.stop()
            counts["crashes"] += 1
            failures.append(("crash", traceback.format_exc(limit=4), text))
            # At once, so that a long campaign cut short keeps its findings.
            print(f"=== crash at case {case}\n{failures[-1][1]}\n{text[:2000]!r}", file=sys.stderr)
        if (case + 1) % 100 == 0:
            print(
                f"{case + 1} cases, {counts['crashes']} crashes, {time.perf_counter() - start:.0f} s",
                file=sys.stderr,
            )
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"optgen {optgen.__version__}, {args.cases} cases (seed {args.seed}) in {wall:.0f} s")
    for key, value in counts.items():
        print(f"  {key}: {value}")
    print(f"  slowest rejection: {slowest_rejection:.3f} s; peak resident memory: {peak:.0f} MiB")
    print(
        f"  slowest case: {slowest_case:.2f} s CPU; "
        f"largest hostile case: {largest_case / 2**20:.1f} MiB traced"
    )
    print(f"  slowest case's text: {slowest_text[:300]!r}")
    for kind, detail, text in failures[:10]:
        print(f"--- {kind}\n{detail}\n{text[:500]}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
