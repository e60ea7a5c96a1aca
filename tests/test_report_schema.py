"""`--resume` trusts nothing in the report it reads back: a changed type, a foreign entry or
a run of a seed the settings do not have is a clear refusal, and the file stays as it was;
and `convert_batchnorm` keeps a model's dtype."""

import copy
import json
import shutil

import pytest
from conftest import run_optgen

from optgen.experiments.images import ResumeRefused, _resumed
from optgen.experiments.report_schema import ReportMismatch, check_report

RUN = {
    "test_error": 0.5,
    "test_loss": 1.2,
    "final_train_loss": None,  # a diverged run: NaN is stored as null
    "weight_norm": 3.0,
    "curve": [2.3, 1.9, None],
    "wall_time_s": 1.5,
    "world_size": 1,
}
ENTRY = {
    "class": "IsoConvnextGd",
    "source": "examples/models/isotropic.opt",
    "module": "isotropic.py",
    "module_sha256": "ab" * 32,
    "family": "iso_convnext",
    "family_description": "isotropic ConvNeXt-like",
    "rule": "gd",
    "baseline": True,
    "params": 1234,
    "flops": 5678,
    "certificate": {"universal": True, "reasons": [], "stages": []},
    "runs": {"0": RUN, "1": RUN},
    "metrics": {},
    "wall_time_s": 3.0,
}
REPORT = {
    "experiment": "mnist",
    "format": 1,
    "settings": {"seeds": 2},
    "settings_digest": "d" * 64,
    "data": {},
    "data_digest": "e" * 64,
    "complete": True,
    "networks": {"iso_convnext_gd": ENTRY},
}


def changed(path: tuple, value):
    report = copy.deepcopy(REPORT)
    *parents, last = path
    node = report
    for key in parents:
        node = node[key]
    node[last] = value
    return report


def test_a_report_as_the_experiment_writes_it_passes():
    check_report(REPORT, seeds=2)


NET = ("networks", "iso_convnext_gd")


@pytest.mark.parametrize(
    "path, value, message",
    [
        (("networks",), [], "its networks is a list, not an object"),
        (("complete",), "yes", "its complete is a string, not true or false"),
        ((*NET, "params"), "1234", "network iso_convnext_gd: params is a string, not an integer"),
        ((*NET, "params"), True, "params is true or false, not an integer"),
        ((*NET, "runs"), {"0": RUN, "1": RUN, "7": RUN}, "has a run of seed '7'"),
        ((*NET, "runs"), {"0": RUN, "01": RUN}, "has a run of seed '01'"),
        ((*NET, "runs", "0", "test_error"), "0.5", "seed 0: test_error is a string"),
        ((*NET, "runs", "0", "curve"), [1.0, "x"], "seed 0: its curve holds a string"),
        ((*NET, "runs", "1"), 0.5, "seed 1 is float, not an object"),
        (("networks", "planted"), {"class": "Foreign"}, "network planted has no source"),
        ((*NET, "extra"), 1, "network iso_convnext_gd has keys no report holds: extra"),
    ],
)
def test_a_changed_type_a_foreign_entry_or_an_extra_seed_is_named(path, value, message):
    with pytest.raises(ReportMismatch, match=None) as caught:
        check_report(changed(path, value), seeds=2)
    assert message in str(caught.value)


def test_resume_refuses_a_report_that_fails_its_layout_and_writes_nothing(tmp_path):
    path = tmp_path / "mnist.json"
    bad = changed((*NET, "runs"), {"0": RUN, "1": RUN, "2": RUN})
    path.write_text(json.dumps(bad))
    before = path.read_bytes()
    fresh = changed(("complete",), False)
    with pytest.raises(ResumeRefused) as caught:
        _resumed(path, fresh, sources=[])
    assert str(caught.value).startswith(f"cannot resume from {path}: network iso_convnext_gd")
    assert "seed '2'" in str(caught.value)
    assert path.read_bytes() == before


def test_convert_batchnorm_keeps_the_dtype_of_a_float64_model():
    import torch

    from optgen.experiments.distributed import convert_batchnorm

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 1), torch.nn.BatchNorm2d(3)).double()
    model[1].running_mean.fill_(0.25)
    converted = convert_batchnorm(model)
    norm = converted[1]
    assert type(norm).__name__ == "GlobalBatchNorm2d"
    assert norm.weight.dtype == norm.running_mean.dtype == torch.float64
    assert norm.running_mean.tolist() == [0.25] * 3
    assert converted(torch.ones(2, 1, 2, 2, dtype=torch.float64)).dtype == torch.float64


RESUMABLE = ["mnist", "--quick", "--seeds", "1", "--networks", "iso_convnext_gd"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One finished quick run, copied by each test that edits its report."""
    pytest.importorskip("mlxtend")
    out = tmp_path_factory.mktemp("finished")
    first = run_optgen("experiment", *RESUMABLE, "--out", str(out))
    assert first.returncode == 0, first.stderr
    return out


@pytest.mark.slow
@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda e: e["runs"].update({"5": e["runs"]["0"]}), "has a run of seed '5'"),
        (lambda e: e.update(params=str(e["params"])), "params is a string, not an integer"),
    ],
)
def test_resume_from_an_edited_report_is_exit_1_and_leaves_it(
    tmp_path, finished_run, edit, message
):
    out = tmp_path / "out"
    shutil.copytree(finished_run, out)
    report = json.loads((out / "mnist.json").read_text())
    edit(report["networks"]["iso_convnext_gd"])
    (out / "mnist.json").write_text(json.dumps(report))
    files = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    result = run_optgen("experiment", *RESUMABLE, "--resume", "--out", str(out))
    assert result.returncode == 1, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == files
