"""Data-parallel training of generated modules: DDP and FSDP2 on 2 gloo ranks on localhost
give the gradients of one process on the full batch (issue 16, point 9), and FSDP2 with
each stage and the root of a generated model wrapped trains as one process (issue 25)."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import EXAMPLES, GENERATED

import optgen

CHECK = Path(__file__).parent / "distributed_check.py"

# The proximal point rule with a learnable step: its adjoint solve runs under the wrapper.
LEARNABLE_PPM = (
    (EXAMPLES / "ppm.opt").read_text().replace("param t = 0.5", "param t = 0.5 learnable positive")
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def module_file(kind: str, tmp_path: Path) -> Path:
    if kind == "explicit":
        return GENERATED / "nesterov_k.py"  # a learnable scalar t and a k schedule
    if kind == "equilibrium":
        return GENERATED / "deq.py"
    path = tmp_path / "ppm.py"
    path.write_text(optgen.compile_source(LEARNABLE_PPM, "ppm.opt")["ppm.py"])
    return path


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["explicit", "implicit", "equilibrium"])
def test_data_parallel_gradients_equal_one_process(kind, tmp_path):
    """DDP, then FSDP2, in one run of the two ranks."""
    result = subprocess.run(
        [sys.executable, str(CHECK), str(module_file(kind, tmp_path)), str(free_port())],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(report) == {"ddp", "fsdp"}, report
    for mode in report.values():
        assert mode["names"] and mode["worst"] <= 1e-10, report


# float64 throughout: what differs is only the order of the sums (each rank's half batch,
# then FSDP2's average over the ranks, against one sum over the full batch), a few ulps of
# values of order 1 (measured: at most 7e-16 for gradients and parameters, 4e-15 for the
# stages' outputs). A real difference is far larger: train-mode BatchNorm on half batches
# gives gradients 0.6 apart in deep_heavy_ball.
STAGED_TOLERANCE = 1e-12


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, stages, training",
    [
        ("deep_heavy_ball", 3, False),  # carry states through 2 transitions; BatchNorm: eval
        ("iso_vit_apg2", 1, True),  # tokens, a transformer block; no BatchNorm: train mode
    ],
)
def test_fsdp2_on_each_stage_and_the_root_trains_as_one_process(name, stages, training):
    """fully_shard on every model.stages[i], then on the root; two SGD steps (momentum) on
    half the batch per rank, the second with gradient checkpointing of the stages; then
    forward_intermediates, whose forward hooks on the sharded stages record their outputs.
    Losses, gradients, parameters after each step and the stages' outputs equal those of
    one process on the full batch."""
    path = GENERATED / f"{name}.py"
    result = subprocess.run(
        [sys.executable, str(CHECK), str(path), str(free_port()), "staged"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["training"] is training and report["stages"] == stages, report
    assert report["start"] == 0.0, report  # every rank built the model of the one process
    worst = [*report["loss"], *report["grad"], *report["param"], report["intermediates"]]
    assert len(worst) == 7 and max(worst) <= STAGED_TOLERANCE, report


def test_learnable_scalars_are_stored_one_dimensional():
    """FSDP2's fully_shard refuses 0-dim parameters."""
    namespace: dict = {}
    exec(compile((GENERATED / "nesterov_k.py").read_text(), "nesterov_k", "exec"), namespace)
    module = namespace["NesterovK"](4)
    assert module.t_raw.shape == (1,)
    assert all(p.dim() >= 1 for p in module.parameters())


def test_a_block_or_param_that_never_reaches_the_output_is_a_warning():
    text = (EXAMPLES / "ladmm.opt").read_text()
    line = next(i for i, s in enumerate(text.splitlines(), 1) if "block G" in s)
    with pytest.warns(optgen.OptgenWarning) as caught:
        optgen.check_source(text, "ladmm.opt")
    messages = [str(w.message) for w in caught]
    assert any(
        m.startswith(f"ladmm.opt:{line}:5: warning: block G of network LADMM at layer k=15")
        and "find_unused_parameters=True" in m
        for m in messages
    ), messages
    dead = """
network Dead {
    state x, y
    param t = 0.5
    param s = 0.3 learnable
    block T = mlp(hidden=dim)
    block G = mlp(hidden=dim)
    update {
        x+ = x - t*T(x)
        y+ = y - s*G(y)
    }
}
"""
    with pytest.warns(optgen.OptgenWarning) as caught:
        optgen.check_source(dead, "dead.opt")
    messages = " ".join(str(w.message) for w in caught)
    assert "block G of network Dead at layer k=0, k=1, k=2 and 5 more never reaches" in messages
    assert "learnable param s of network Dead never reaches the output" in messages
