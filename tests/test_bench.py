"""The benchmarks run and print their tables (tiny sizes: a smoke test, not a measurement;
the figures of docs/performance.md come from the full runs named there)."""

import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import run_optgen

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


MODEL_CASES = [
    "gd (mlp)",
    "heavy_ball (mlp)",
    "nesterov (mlp)",
    "nesterov_conv",
    "nesterov_convnext",
    "nesterov_transformer",
    "deep_nesterov (staged.opt)",
    "iso_vit_apg2 (isotropic.opt)",
]


def test_model_eager_steps_of_every_case():
    done = run_bench("model.py", "--repeats", "1", "--no-compile", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    rows = table_rows(done.stdout)
    assert [row[0] for row in rows] == MODEL_CASES
    for row in rows:
        assert float(row[1]) > 0 and float(row[2]) > 0, row  # eager step times
        assert row[4] == row[7] == row[10] == "-", row  # no compiled columns
        # Same blocks and weights: the generated step holds at most what the reference does.
        assert float(row[11]) <= 1.001, row  # bytes saved for backward
        assert float(row[12]) <= 1.001, row  # peak tensor bytes of an eager step
        assert float(row[14]) < 1e-4, row  # generated and hand-written outputs agree


def test_model_refuses_an_unknown_case():
    done = run_bench("model.py", "--cases", "resnet", "--no-compile")
    assert done.returncode == 2
    assert "unknown cases ['resnet']" in done.stderr


@pytest.mark.slow
def test_model_compiled_columns_without_graph_breaks():
    done = run_bench("model.py", "--repeats", "1", "--cases", "gd", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    assert "compile time the least of 1 cold compiles" in done.stdout
    (row,) = table_rows(done.stdout)
    assert float(row[4]) > 0 and float(row[5]) > 0  # compiled steady-state steps
    assert float(row[7]) > 0 and float(row[8]) > 0  # cold compile times
    assert row[10] == "0/0"  # graph breaks, generated/hand-written
    assert float(row[14]) < 1e-4  # compiled generated agrees with the eager reference


def test_model_takes_the_least_of_cold_compiles_in_alternating_order(monkeypatch):
    # --compile-repeats N: each variant compiled N times cold, the variants taking turns
    # at going first (no compiling here: the subprocess is replaced by a record of calls).
    sys.path.insert(0, str(BENCH))  # model.py imports bench/common.py
    try:
        spec = importlib.util.spec_from_file_location("bench_model", BENCH / "model.py")
        model = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = model  # its dataclasses look their module up
        spec.loader.exec_module(model)
    finally:
        sys.path.remove(str(BENCH))
    calls = []
    seconds = iter([5.0, 4.0, 3.0, 6.0, 4.5, 2.0])

    def fake_child(stem, variant, device, cache_dir):
        calls.append(variant)
        return {"compile_s": next(seconds), "graph_breaks": 0, "compiled_peak": len(calls)}

    monkeypatch.setattr(model, "run_child", fake_child)
    found = model.cold_compiles("gd", torch.device("cpu"), 3)
    generated, hand = "generated", "hand-written"
    assert calls == [generated, hand, hand, generated, generated, hand]
    assert found[generated]["compile_s"] == 4.5 and found[hand]["compile_s"] == 2.0
    assert found[generated]["compiled_peak"] == 1  # the first run's other figures
    assert all(Path(f["cache_dir"]).is_dir() for f in found.values())
    for cache_dir in model.CACHE_DIRS:
        shutil.rmtree(cache_dir, ignore_errors=True)


def test_kernels_counts_the_compiled_work_of_both_variants(tmp_path, monkeypatch):
    # The user's inductor cache is left alone: run_and_get_code's entries break a later
    # compile of the same graph, so the bench compiles into a cache of its own.
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    done = run_bench("kernels.py", "--cases", "gd", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    assert not list(tmp_path.iterdir())
    rows = {row[0]: row for row in table_rows(done.stdout)}
    assert set(rows) == {"gd (mlp)"}
    for row in rows.values():
        kernels, loads, stores, library = ([int(n) for n in cell.split(" / ")] for cell in row[1:5])
        assert 0 < kernels[0] <= kernels[1] and 0 < loads[0] <= loads[1], row
        assert 0 < stores[0] <= stores[1] and library[0] == library[1] > 0, row
        assert row[5] == "yes", row  # the same matmuls, in number and kind


HANDWRITTEN_CASES = [
    "deep_gd (staged.opt) vs ResNet",
    "iso_convnext_gd (isotropic.opt) vs ConvNeXt",
]


@pytest.mark.parametrize("residual", ["sub", "add"])
def test_handwritten_twins_equal_and_no_leaner_than_generated(tmp_path, residual):
    figures = tmp_path / "handwritten.json"
    done = run_bench(
        "handwritten.py", "--quick", "--no-compile", "--residual", residual, "--json", str(figures)
    )
    assert done.returncode == 0, done.stderr  # includes: the outputs agree, the weights load
    rows = table_rows(done.stdout)
    assert [row[0] for row in rows] == HANDWRITTEN_CASES
    cases = json.loads(figures.read_text())["cases"]
    assert [case["case"] for case in cases] == HANDWRITTEN_CASES
    for case in cases:
        assert case["max_difference"] < 1e-5, case
        # Peaks are counts of live tensor bytes: deterministic, so compared exactly.
        for peak in (case["inference_peak"], case["train_peak"]):
            assert 0 < peak["generated"] <= peak["hand-written"], case
        assert case["step"]["generated_ms"] > 0 and case["step"]["hand_ms"] > 0, case
        assert case["compile"] is None, case


def load_bench(script: str):
    """A bench script as a module (it imports bench/common.py from its folder)."""
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{Path(script).stem}", BENCH / script)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclasses look their module up
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


def test_handwritten_compiles_alternate_and_report_the_hand_written_spread(monkeypatch):
    # No compiling here: the fresh process is replaced by a record of calls.
    handwritten = load_bench("handwritten.py")
    calls = []
    seconds = iter([10.0, 9.0, 12.0, 11.0, 10.5, 10.0])

    def fake_child(stem, variant, batch, residual, device):
        calls.append(variant)
        return {"cpu_s": next(seconds), "wall_s": 1.0, "graph_breaks": 0}

    monkeypatch.setattr(handwritten, "run_child", fake_child)
    runs = handwritten.cold_compiles("deep_gd", 2, "sub", torch.device("cpu"), 3)
    generated, hand = "generated", "hand-written"
    assert calls == [generated, hand, hand, generated, generated, hand]
    found = handwritten.compile_times(runs)
    # generated 10.0, 11.0, 10.5; hand-written 9.0, 12.0, 10.0: medians 10.5 and 10.0.
    assert found["ratio"] == pytest.approx(1.05)
    assert found["hand_spread"] == pytest.approx([0.9, 1.2])
    assert found["generated_spread"] == pytest.approx([1.0, 1.1])
    assert found["within"] and found["graph_breaks"] == [0, 0]


MEMORY_VARIANTS = [
    "standard",
    "checkpointed",
    "checkpointed 2",
    "reversible",
    "hand-written",
    "hand-written, checkpoint per block",
]


def test_memory_rows_of_every_rule_and_variant():
    done = run_bench(
        "memory.py",
        *("--depths", "2,6", "--dim", "8", "--batch", "16", "--repeats", "1"),
        *("--time-dim", "8", "--time-batch", "16", "--device", "cpu"),
    )
    assert done.returncode == 0, done.stderr
    rows = {(row[0], row[1]): row for row in table_rows(done.stdout)}
    assert set(rows) == {(r, v) for r in ("gd", "heavy_ball", "nesterov") for v in MEMORY_VARIANTS}
    # gd cannot be inverted: a reversible gd is always refused, with the compiler's message.
    assert rows["gd", "reversible"][-1].startswith("not available: ")
    for (_, variant), row in rows.items():
        if row[-1].startswith("not available: "):
            assert variant in ("checkpointed", "checkpointed 2", "reversible"), row
            continue
        saved_slope, train_slope = float(row[4]), float(row[8])
        assert float(row[-2]) < 1e-4, row  # gradients agree with the standard network
        if variant == "reversible":
            assert saved_slope <= 1.1, row  # what a step keeps does not grow with depth
        if variant in ("standard", "hand-written"):
            assert saved_slope > 2, row  # 3x the layers: the saved states grow with them
            assert train_slope > 1, row
    for rule in ("gd", "heavy_ball", "nesterov"):
        plain, checkpointed = (
            rows[rule, "hand-written"],
            rows[rule, "hand-written, checkpoint per block"],
        )
        assert float(checkpointed[3]) < float(plain[3])  # saved bytes at the deepest depth
        assert rows[rule, "standard"][2:4] == plain[2:4]  # saved bytes: generated == hand-written


DEQ_ARGS = ("--batch", "16", "--dim", "8", "--repeats", "1", "--max-iter", "100")


def check_deq_rows(rows: list[list[str]], torchdeq: bool) -> None:
    for row in rows:
        tol = float(row[1])
        assert row[2] == ("float64" if tol < 1e-7 else "float32"), row
        assert int(row[3]) > 0 and int(row[11]) > 0, row  # forward and backward iterations
        assert float(row[12]) <= tol, row  # the forward solve met its tolerance
        if torchdeq:
            assert int(row[4]) > 0, row
            # Both stop within tol of the same fixed point: their outputs agree to about tol.
            assert float(row[13]) < 100 * tol, row
        else:
            assert row[4] == row[6] == row[13] == "-", row


def test_deq_solves_at_every_tolerance():
    done = run_bench("deq.py", *DEQ_ARGS, "--tols", "1e-4,1e-8", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    rows = table_rows(done.stdout)
    assert [(row[0], row[1]) for row in rows] == [
        (solver, tol) for solver in ("anderson", "fixed_point") for tol in ("0.0001", "1e-08")
    ]
    check_deq_rows(rows, torchdeq=importlib.util.find_spec("torchdeq") is not None)


def test_deq_without_torchdeq_prints_its_columns_empty():
    # As if torchdeq were not installed: an import of a None entry of sys.modules fails.
    script = (
        "import runpy, sys; sys.modules['torchdeq'] = None; "
        f"sys.argv = [{str(BENCH / 'deq.py')!r}, *{list(DEQ_ARGS)!r}, '--tols', '1e-4',"
        " '--solvers', 'fixed_point']; "
        f"sys.path.insert(0, {str(BENCH)!r}); "
        f"runpy.run_path({str(BENCH / 'deq.py')!r}, run_name='__main__')"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "torchdeq not installed (pip install torchdeq)" in done.stdout
    rows = table_rows(done.stdout)
    assert [row[0] for row in rows] == ["fixed_point"]
    check_deq_rows(rows, torchdeq=False)


@pytest.mark.skipif(shutil.which("bash") is None, reason="the GPU scripts are bash scripts")
@pytest.mark.parametrize("script", ["gpu.sh", "gpu_experiment.sh"])
def test_gpu_script_fails_clearly_without_cuda(tmp_path, script):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the script would run the whole GPU bench")
    done = subprocess.run(
        ["bash", str(BENCH / script)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OUT": str(tmp_path / "results")},
    )
    assert done.returncode == 1
    assert f"bench/{script}: no CUDA device" in done.stderr
    assert not (tmp_path / "results").exists()  # nothing installed, nothing written


def test_the_gpu_experiment_gives_only_options_the_experiment_has():
    text = (BENCH / "gpu_experiment.sh").read_text()
    given = set(re.findall(r"(--[a-z][a-z0-9-]+)", text.split("ARGS=(", 1)[1].split("{", 1)[0]))
    assert {"--train-size", "--epochs", "--seeds", "--bf16", "--channels-last"} <= given
    done = run_optgen("experiment", "--help")
    assert done.returncode == 0
    assert {flag for flag in given if flag not in done.stdout} == set()


def test_allocation_probe_times_both_settings():
    done = run_bench("allocation.py", "--size", "4K", "--repeats", "1")
    assert done.returncode == 0, done.stderr
    rows = table_rows(done.stdout)
    assert [row[0] for row in rows] == allocators_run(done.stdout)
    for row in rows:
        assert all(float(cell) >= 0 for cell in row[1:7]), row
        assert all(0 < float(cell) < float("inf") for cell in row[7:]), row
