"""How an image run is executed (issue 26, point 5, its options): `--device`, `--bf16`,
`--channels-last`, `--compile`. The CPU path is what is tested here; bf16 autocast and
channels_last run on the CPU too. `--compile` is not run here (about 45 s of compilation
for one quick model on two cores)."""

import hashlib
import json
import math
from dataclasses import asdict

import pytest
import torch
from conftest import run_optgen
from test_image_sources import fashion_folder

from optgen.experiments.distributed import convert_batchnorm, use_cuda
from optgen.experiments.images import FORMAT, settings_digest
from optgen.experiments.report_schema import ReportMismatch, check_report
from optgen.experiments.settings import image_settings_for


def test_bf16_is_a_setting_and_leaves_older_digests_alone():
    s = image_settings_for("mnist", quick=True)
    before = {k: v for k, v in asdict(s).items() if k != "bf16"}
    text = json.dumps({"format": FORMAT, **before}, sort_keys=True)
    assert settings_digest(s) == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert settings_digest(image_settings_for("mnist", quick=True, bf16=True)) != settings_digest(s)


def report_with_run(run: dict) -> dict:
    entry = {
        "class": "C", "source": "s", "module": "m.py", "module_sha256": "0", "family": "wide",
        "family_description": "d", "rule": "gd", "baseline": True, "params": 1, "flops": 1,
        "certificate": {}, "runs": {"0": run}, "metrics": {}, "wall_time_s": 1.0,
    }  # fmt: skip
    return {
        "experiment": "mnist", "settings": {}, "settings_digest": "0", "data_digest": "0",
        "complete": False, "networks": {"wide_gd": entry},
    }  # fmt: skip


def test_a_run_may_record_its_runtime_or_not():
    run = {
        "test_error": 0.1, "test_loss": 0.3, "final_train_loss": 0.2, "weight_norm": 1.0,
        "curve": [0.5], "wall_time_s": 1.0, "world_size": 1,
    }  # fmt: skip
    check_report(report_with_run(run), seeds=1)  # a report written before --device
    check_report(report_with_run({**run, "runtime": {"device": "cpu"}}), seeds=1)
    with pytest.raises(ReportMismatch, match="runtime is a string, not an object"):
        check_report(report_with_run({**run, "runtime": "cpu"}), seeds=1)


def test_global_batchnorm_under_bf16_autocast_normalises_in_float32():
    model = convert_batchnorm(torch.nn.Sequential(torch.nn.BatchNorm2d(3)))
    x = torch.randn(4, 3, 5, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(x.bfloat16())
    assert y.dtype == torch.float32
    reference = torch.nn.functional.batch_norm(x.bfloat16().float(), None, None, training=True)
    assert torch.allclose(y, reference, atol=1e-5)
    model.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(x.bfloat16()).dtype == torch.float32


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_device_cuda_without_cuda_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="--device cuda: torch sees no CUDA device"):
        use_cuda("cuda")
    assert use_cuda("auto") is False and use_cuda("cpu") is False
    out = tmp_path / "out"
    result = run_optgen("experiment", "mnist", "--quick", "--device", "cuda", "--out", str(out))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "optgen: error: --device cuda: torch sees no CUDA device" in result.stderr
    assert not out.exists()


def test_runtime_options_are_refused_for_the_synthetic_experiments(tmp_path):
    result = run_optgen("experiment", "rings", "--bf16", "--channels-last", "--out", str(tmp_path))
    assert result.returncode == 1
    assert "optgen: error: --bf16, --channels-last: only for the image experiments" in (
        result.stderr
    )


@pytest.mark.slow
def test_quick_run_in_bf16_and_channels_last_records_both(tmp_path):
    data = fashion_folder(tmp_path / "fashion")
    out = tmp_path / "out"
    result = run_optgen(
        "experiment", "fashion-mnist", "--quick", "--data", str(data), "--bf16",
        "--channels-last", "--device", "cpu", "--networks", "iso_convnext_gd", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "fashion-mnist.json").read_text())
    assert report["settings"]["bf16"] is True
    run = report["networks"]["iso_convnext_gd"]["runs"]["0"]
    assert run["runtime"]["device"] == "cpu" and run["runtime"]["channels_last"] is True
    assert run["runtime"]["compile"] is False and run["runtime"]["torch"] == torch.__version__
    assert math.isfinite(run["test_loss"]) and all(math.isfinite(v) for v in run["curve"])
