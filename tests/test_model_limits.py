"""Hostile models are located errors before anything is allocated: every case here once
ended in an internal error, a module asking for terabytes, or minutes of compiling. Each is
now exit 1 at `file:line:col`, writes nothing, and stays within a bounded CPU time and
address space (docs/models.md, "Limits")."""

import re
import resource
import subprocess
import sys

import pytest
import torch
from conftest import ROOT

import optgen
from optgen.backend import costs
from optgen.checks import model_size

NETWORKS = """\
network GdStage {
    state x
    param t = 1.0
    block T = conv(hidden=dim)
    layers 3
    update { x+ = x - t*T(x) }
}
network VitStage {
    state x
    param t = 1.0
    block T = transformer(heads=2)
    layers 2
    update { x+ = x - t*T(x) }
}
"""
CPU_LIMIT_S = 60  # a wide margin: each case takes about 2 s of CPU
ADDRESS_SPACE = 6 * 2**30  # the compiler, torch and sympy fit in this; 108 GB would not


def model(*lines: str) -> str:
    return NETWORKS + "model M {\n" + "".join(f"    {line}\n" for line in lines) + "}\n"


def image(stem: str, *middle: str, head: str = "head classifier(classes=10)") -> str:
    return model("input [3, 32, 32]", stem, *middle, head)


CASES = {
    "tokens_stem_on_a_huge_input": (
        model(
            "input [3, 1e9, 1e9]",
            "stem tokens(out=32, size=4)",
            "stage VitStage(dim=32, depth=1)",
            "head classifier(classes=10)",
        ),
        "the input of model M is a tensor of [3, 1000000000, 1000000000]",
    ),
    "up_conv_scale_100000_twice": (
        image(
            "stem conv(out=8)",
            "stage GdStage(dim=8, depth=1)",
            "up conv(out=8, scale=100000)",
            "stage GdStage(dim=8, depth=1)",
            "up conv(out=8, scale=100000)",
            "stage GdStage(dim=8, depth=1)",
        ),
        "stage GdStage is given a tensor of [8, 3200000, 3200000] per sample",
    ),
    "stem_out_1e9": (
        image("stem conv(out=1e9)", "stage GdStage(dim=1e9, depth=1)"),
        "stem conv has 1,000,000,000 channels, more than 65,536",
    ),
    "classes_2_to_the_70": (
        image(
            "stem conv(out=8)",
            "stage GdStage(dim=8, depth=1)",
            head="head classifier(classes=2^70)",
        ),
        "head classifier has 1,180,591,620,717,411,303,424 classes, more than 1,000,000",
    ),
    "classes_1e12": (
        image(
            "stem conv(out=8)",
            "stage GdStage(dim=8, depth=1)",
            head="head classifier(classes=1e12)",
        ),
        "head classifier has 1,000,000,000,000 classes",
    ),
    "one_stage_of_depth_100000": (
        image("stem conv(out=8)", "stage GdStage(dim=8, depth=100000)"),
        "model M has 100,000 layers by this stage, more than 4,096 in all",
    ),
    "three_thousand_stages": (
        image("stem conv(out=4)", *["stage GdStage(dim=4, depth=1)"] * 3000),
        "model M has more than 64 stages",
    ),
    "attention_over_a_million_tokens": (
        model(
            "input [3, 4096, 4096]",
            "stem tokens(out=8, size=4)",
            "stage VitStage(dim=8, depth=1)",
            "head classifier(classes=10)",
        ),
        "stage VitStage attends over 1,048,576 tokens",
    ),
    "a_head_of_too_many_weights": (
        image(
            "stem conv(out=8)",
            "stage GdStage(dim=8, depth=1)",
            "down conv(out=65536)",
            "stage GdStage(dim=65536, depth=1)",
            head="head classifier(classes=100000)",
        ),
        "head classifier would hold 6,553,600,000 weights",
    ),
}


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_LIMIT_S, CPU_LIMIT_S))
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_hostile_model_is_a_located_error_that_writes_nothing(tmp_path, case):
    text, message = CASES[case]
    source = tmp_path / "hostile.opt"
    source.write_text(text)
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "optgen", "compile", str(source), "-o", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        preexec_fn=_limited,
        timeout=600,
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert message in done.stderr
    assert re.search(rf"^{re.escape(str(source))}:\d+:\d+: error: ", done.stderr, re.M)
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr
    assert not out.exists()


def test_the_catalog_models_are_far_inside_the_bounds():
    import optgen

    for path in sorted((ROOT / "examples" / "models").glob("*.opt")):
        result = optgen.api.frontend(path.read_text(), str(path))
        by_name = {net.name: net for net in result.networks}
        assert model_size.model_size_errors(result.models, by_name) == []


# A custom block whose forward reads a tensor value: it cannot run on the meta device.
VALUE_READING_BLOCK = """
import torch
from torch import nn


class ValueGate(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x):
        scale = 1.0 if float(x.abs().max()) < 1e6 else 0.5  # reads a value
        return scale * self.conv(x)
"""
VALUE_READING_MODEL = """\
network Gated {
    state x
    param t = 0.5
    block T = custom("value_gate:ValueGate", layout=image, universal=no)
    layers 2
    update { x+ = x - t*T(x) }
}
model GatedNet {
    input [3, 8, 8]
    stem conv(out=4)
    stage Gated(dim=4, depth=2)
    head classifier(classes=3)
}
"""


def _recording_devices(monkeypatch, module) -> list[str]:
    """The devices `module.build_model` is asked for, from now on."""
    devices: list[str] = []
    build = module.build_model

    def recording(source, class_name, device="cpu", capped=False):
        devices.append(device)
        return build(source, class_name, device, capped)

    monkeypatch.setattr(module, "build_model", recording)
    return devices


def test_flops_are_measured_on_the_meta_device_only(tmp_path, monkeypatch):
    # A block that reads a value fails on the meta device; its model's FLOPS is written
    # as None, with a located warning, and nothing is built on a real device to count it.
    (tmp_path / "value_gate.py").write_text(VALUE_READING_BLOCK)
    monkeypatch.syspath_prepend(str(tmp_path))
    devices = _recording_devices(monkeypatch, costs)
    with pytest.warns(optgen.OptgenWarning, match="measured on the meta device"):
        files = optgen.compile_source(VALUE_READING_MODEL, "gated.opt")
    assert devices == ["meta"]
    source = files["gated_net.py"]
    assert "FLOPS = None" in source
    namespace: dict = {}
    exec(compile(source, "gated_net.py", "exec"), namespace)
    model = namespace["GatedNet"]()
    assert model.PARAMS == sum(p.numel() for p in model.parameters())
    assert model(torch.zeros(2, 3, 8, 8)).shape == (2, 3)
    # Its generated test knows FLOPS was not measured.
    (tmp_path / "gated_net.py").write_text(source)
    (tmp_path / "test_gated_net.py").write_text(files["test_gated_net.py"])
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_gated_net.py"]
        + ["-k", "flops_and_params"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_summary_measures_on_the_meta_device_only(tmp_path, monkeypatch, capsys):
    from optgen.cli import main

    (tmp_path / "value_gate.py").write_text(VALUE_READING_BLOCK)
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "gated.opt"
    path.write_text(VALUE_READING_MODEL)
    devices = _recording_devices(monkeypatch, costs)
    assert main(["inspect", str(path), "--summary"]) == 0
    out = capsys.readouterr().out
    assert set(devices) == {"meta"}  # compiling it, then its summary
    total = next(line for line in out.splitlines() if line.strip().startswith("total"))
    params = sum(p.numel() for p in optgen.load(str(path))["GatedNet"]().parameters())
    assert f"{params:,}" in total and "?" in total  # params counted, FLOPs unknown
