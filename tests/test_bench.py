"""The benchmarks run and print their tables (tiny sizes: a smoke test, not a measurement;
the figures of docs/performance.md come from the full runs named there)."""

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def run_bench(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def table_rows(stdout: str) -> list[list[str]]:
    rows = [line.strip("|").split("|") for line in stdout.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row] for row in rows[1:]]  # without the header


def allocators_run(stdout: str) -> list[str]:
    """The allocator settings a run covered: `warm` needs glibc and prints why when absent."""
    return ["default"] if "warm: allocator setting unavailable" in stdout else ["default", "warm"]


def test_fusion_prints_every_rule_under_both_allocators():
    done = run_bench(
        "fusion.py",
        *("--sizes", "4K", "--dtypes", "float32,bfloat16", "--repeats", "1", "--no-compile"),
    )
    assert done.returncode == 0, done.stderr  # includes generated == naive for every rule
    rows = table_rows(done.stdout)
    rules = ["gd", "heavy_ball", "nesterov", "nesterov_k", "dense", "ladmm"]
    allocators = allocators_run(done.stdout)
    expected = {(a, r, d) for a in allocators for r in rules for d in ("float32", "bfloat16")}
    assert {(row[0], row[1], row[3]) for row in rows} == expected
    for row in rows:
        # Times print in ms with two decimals (0.00 at this size on a fast machine);
        # the ratios come from the unrounded times.
        assert all(float(row[i]) >= 0 for i in (4, 5, 7)), row
        assert all(0 < float(row[i]) < float("inf") for i in (8, 10)), row
    if platform.libc_ver()[0] == "glibc":
        assert allocators == ["default", "warm"]


def test_fusion_refuses_warm_before_default():
    done = run_bench("fusion.py", "--sizes", "4K", "--allocators", "warm,default")
    assert done.returncode == 2
    assert "'warm' must come last" in done.stderr


@pytest.mark.slow
def test_fusion_compiled_column():
    done = run_bench(
        "fusion.py",
        *("--sizes", "4K", "--dtypes", "float32", "--repeats", "1"),
        *("--rules", "heavy_ball", "--allocators", "default"),
    )
    assert done.returncode == 0, done.stderr
    (row,) = table_rows(done.stdout)
    assert float(row[6]) > 0 and float(row[11]) > 0  # compiled time and compile time


def test_model_step_ratios():
    done = run_bench("model.py", "--repeats", "1")
    assert done.returncode == 0, done.stderr
    rows = table_rows(done.stdout)
    assert [row[0] for row in rows] == ["nesterov (mlp)", "nesterov_conv"]
    for row in rows:
        # Same blocks and weights: the generated step saves exactly what the reference does.
        assert float(row[4]) == pytest.approx(1.0, abs=0.001)


def test_allocation_probe_times_both_settings():
    done = run_bench("allocation.py", "--size", "4K", "--repeats", "1")
    assert done.returncode == 0, done.stderr
    rows = table_rows(done.stdout)
    assert [row[0] for row in rows] == allocators_run(done.stdout)
    for row in rows:
        assert all(float(cell) >= 0 for cell in row[1:7]), row
        assert all(0 < float(cell) < float("inf") for cell in row[7:]), row
