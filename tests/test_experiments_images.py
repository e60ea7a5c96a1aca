"""`optgen experiment mnist|digits`: the quick runs, resuming, bad inputs, and a run on two
ranks (torchrun, gloo on 127.0.0.1) against the same run on one."""

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT, run_optgen

from optgen.experiments.distributed import World, rank_batches
from optgen.experiments.image_models import (
    IMAGE_NETWORKS,
    QUICK_NETWORKS,
    cost,
    model_class,
    prepare_models,
)
from optgen.experiments.images import settings_digest
from optgen.experiments.settings import image_settings_for

pytest.importorskip("mlxtend")
pytest.importorskip("sklearn")

PNG = b"\x89PNG\r\n\x1a\n"
# Every process of these tests gives up by itself: subprocess timeouts here, and the
# process group's own timeout (optgen.experiments.distributed.TIMEOUT) inside.
LIMIT_S = 240


def png_size(path):
    from PIL import Image

    with Image.open(path) as image:
        image.verify()
        return image.size


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def single_thread_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def torchrun(nproc: int, *args: str, script: str | None = None) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node N` on 127.0.0.1 of `-m optgen ARGS` (or of a script)."""
    target = [script] if script else ["-m", "optgen"]
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}"]
        + ["--master_addr=127.0.0.1", f"--master_port={free_port()}", *target, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=single_thread_env(),
        timeout=LIMIT_S,
    )


def report_of(folder, name="mnist"):
    return json.loads((folder / f"{name}.json").read_text())


# -- in-process: settings and sharding --------------------------------------------------


def test_the_ranks_shares_of_a_step_make_up_the_one_rank_batch():
    one = rank_batches(World(0, 1), n=100, batch=8, seed=3, epoch=2)
    for size in (2, 4):
        shares = [
            rank_batches(World(r, size), n=100, batch=8, seed=3, epoch=2) for r in range(size)
        ]
        assert all(len(s) == len(one) == 12 for s in shares)
        for step, batch in enumerate(one):
            assert sorted(i for s in shares for i in s[step]) == sorted(batch)


def test_the_settings_digest_changes_with_every_setting_and_only_with_them():
    base = image_settings_for("mnist", quick=True)
    assert settings_digest(base) == settings_digest(image_settings_for("mnist", quick=True))
    for other in (
        image_settings_for("mnist", quick=True, epochs=2),
        image_settings_for("mnist", quick=True, seeds=2),
        image_settings_for("mnist", quick=True, batch=16),
        image_settings_for("mnist", quick=True, train_size=300),
        image_settings_for("digits", quick=True),
        image_settings_for("mnist"),
    ):
        assert settings_digest(other) != settings_digest(base)


def test_default_settings_cover_the_twelve_catalog_models():
    assert len(IMAGE_NETWORKS) == 12 and set(QUICK_NETWORKS) < set(IMAGE_NETWORKS)
    s = image_settings_for("mnist")
    assert (s.n_train, s.n_test, s.seeds, s.size) == (4000, 1000, 3, 32)


def test_a_run_counts_costs_as_the_class_does_attention_included():
    (source,), _ = prepare_models(["iso_vit_gd"])
    cls = model_class(source)
    figures = cost(cls, 32, channels=3, classes=10)  # the class's own build and input
    assert figures == {"params": cls.PARAMS, "flops": cls.FLOPS, "macs": cls.MACS}
    # torch's counter alone misses the CPU attention kernel's two matmuls.
    one_channel = cost(cls, 32, channels=1, classes=10)
    assert one_channel["flops"] < cls.FLOPS and 2 * one_channel["macs"] == one_channel["flops"]


# -- the CLI ------------------------------------------------------------------------------


@pytest.mark.slow
def test_quick_mnist_writes_finite_metrics_params_flops_and_a_plot(tmp_path):
    result = run_optgen("experiment", "mnist", "--quick", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    report = report_of(tmp_path)
    assert report["complete"] is True and report["settings"]["seeds"] == 1
    assert report["data"]["input"] == [1, 32, 32]
    assert report["data"]["digest"] == report["data_digest"] and len(report["data_digest"]) == 64
    assert list(report["networks"]) == list(QUICK_NETWORKS)
    for label, entry in report["networks"].items():
        error = entry["metrics"]["test_error"]
        assert 0 <= error["mean"] <= 1 and error["std"] == 0 and error["diverged"] == 0, label
        assert math.isfinite(entry["metrics"]["test_loss"]["mean"])
        assert entry["params"] > 0 and entry["flops"] > 0 and entry["wall_time_s"] > 0
        assert entry["baseline"] == label.endswith("_gd")
        assert entry["certificate"]["universal"] is True
        assert len(entry["runs"]["0"]["curve"]) == report["settings"]["steps"]
        assert (tmp_path / "modules" / entry["module"]).is_file()
        assert f"mnist {label}: test error" in result.stdout
    # FLOPs at the fed input (one channel): below the class's FLOPS at [3, 32, 32].
    assert report["networks"]["wide_gd"]["flops"] < 133892608
    assert (tmp_path / "mnist.png").read_bytes()[:8] == PNG
    width, height = png_size(tmp_path / "mnist.png")
    assert width > 1000 and height > 300


@pytest.mark.slow
def test_quick_digits_feeds_the_vit_its_declared_token_count(tmp_path):
    result = run_optgen(
        "experiment", "digits", "--quick", "--networks", "iso_vit_gd", "--out", str(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    report = report_of(tmp_path, "digits")
    assert "load_digits" in report["data"]["source"]
    assert math.isfinite(report["networks"]["iso_vit_gd"]["metrics"]["test_error"]["mean"])
    assert (tmp_path / "digits.png").read_bytes()[:8] == PNG


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        (["cifar"], "optgen: error: argument name: invalid choice: 'cifar'"),
        (
            ["mnist", "--quick", "--networks", "wide_gd,wide_gdd"],
            "optgen: error: no network 'wide_gdd': give a catalog model"
            f" ({', '.join(IMAGE_NETWORKS)}) or a .opt file with models\n",
        ),
        (
            ["mnist", "--train-size", "4500"],
            "optgen: error: --train-size 4500 is too large: the mnist data set has 5000"
            " images and 1000 are kept for the test\n",
        ),
        (["mnist", "--seeds", "0"], "optgen: error: --seeds must be at least 1\n"),
        (
            ["rings", "--resume"],
            "optgen: error: --resume: only for the image experiments (mnist, digits, fashion-mnist, folder)\n",
        ),
    ],
)
def test_a_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "out"
    result = run_optgen("experiment", *args, "--out", str(out))
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""
    assert not out.exists()


# -- resuming -----------------------------------------------------------------------------

RESUMABLE = ["mnist", "--quick", "--seeds", "2", "--networks", "iso_convnext_gd"]


@pytest.fixture(scope="module")
def two_seed_run(tmp_path_factory):
    """A finished quick run of one network over two seeds."""
    out = tmp_path_factory.mktemp("two_seeds")
    result = run_optgen("experiment", *RESUMABLE, "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.slow
def test_resume_continues_from_the_last_finished_seed(tmp_path, two_seed_run):
    out = tmp_path / "out"
    shutil.copytree(two_seed_run, out)
    finished = report_of(two_seed_run)["networks"]["iso_convnext_gd"]["runs"]
    # What a run killed during seed 1 leaves: seed 0 only. The sentinel proves that seed
    # 0 is kept, not trained again.
    killed = report_of(out)
    runs = killed["networks"]["iso_convnext_gd"]["runs"]
    del runs["1"]
    runs["0"]["test_error"] = 0.123456
    killed["complete"] = False
    (out / "mnist.json").write_text(json.dumps(killed))
    result = run_optgen("experiment", *RESUMABLE, "--resume", "--out", str(out))
    assert result.returncode == 0, result.stderr
    resumed = report_of(out)
    runs = resumed["networks"]["iso_convnext_gd"]["runs"]
    assert resumed["complete"] is True and list(runs) == ["0", "1"]
    assert runs["0"]["test_error"] == 0.123456
    assert runs["1"]["test_loss"] == pytest.approx(finished["1"]["test_loss"], abs=1e-6)
    assert runs["1"]["curve"] == pytest.approx(finished["1"]["curve"], abs=1e-6)
    mean = resumed["networks"]["iso_convnext_gd"]["metrics"]["test_error"]["mean"]
    assert mean == pytest.approx((0.123456 + finished["1"]["test_error"]) / 2)


@pytest.mark.slow
def test_resume_of_a_finished_run_trains_nothing_and_keeps_other_networks(tmp_path, two_seed_run):
    out = tmp_path / "out"
    shutil.copytree(two_seed_run, out)
    before = report_of(out)
    result = run_optgen(
        "experiment", "mnist", "--quick", "--seeds", "2", "--networks", "iso_vit_gd",
        "--resume", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    after = report_of(out)
    assert list(after["networks"]) == ["iso_vit_gd", "iso_convnext_gd"]
    assert after["networks"]["iso_convnext_gd"] == before["networks"]["iso_convnext_gd"]
    assert list(after["networks"]["iso_vit_gd"]["runs"]) == ["0", "1"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "change, message",
    [
        (["--epochs", "2"], "it was written with other settings (epochs 1 there, 2 now; steps 8"),
        (["--batch", "16"], "(batch 32 there, 16 now; steps 8 there, 16 now)"),
    ],
)
def test_resume_against_other_settings_is_refused_and_loses_nothing(
    tmp_path, two_seed_run, change, message
):
    out = tmp_path / "out"
    shutil.copytree(two_seed_run, out)
    files = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    result = run_optgen("experiment", *RESUMABLE, *change, "--resume", "--out", str(out))
    assert result.returncode == 1
    assert result.stderr.startswith(f"optgen: error: cannot resume from {out / 'mnist.json'}: ")
    assert message in result.stderr and "Traceback" not in result.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == files


@pytest.mark.slow
def test_resume_from_a_file_that_is_no_report_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mnist.json").write_text("{not json")
    result = run_optgen("experiment", *RESUMABLE, "--resume", "--out", str(out))
    assert result.returncode == 1
    assert "it is not the report of an image experiment" in result.stderr
    assert (out / "mnist.json").read_text() == "{not json"
    assert sorted(p.name for p in out.iterdir()) == ["mnist.json"]


# -- data-parallel ------------------------------------------------------------------------


# `python -m optgen ARGS` with torch's default dtype float64: every model is built, trained
# and evaluated in float64 (image_train feeds the images in the model's dtype).
FLOAT64_CLI = textwrap.dedent("""
    import sys

    import torch

    torch.set_default_dtype(torch.float64)
    from optgen.cli import main

    sys.exit(main(sys.argv[1:]))
    """)

# Why the comparison runs in float64, and its tolerance. The 2-rank run does the 1-rank
# run's arithmetic in another order: convolutions and BatchNorm sums over 16 images a rank
# instead of 32, the gradient summed by the all-reduce and halved instead of averaged over
# 32 at once. Measured on this quick run (deep_gd, 8 AdamW steps, lr 2e-3, eps 1e-8):
# - float32 (unit roundoff 6e-8): rounding moves the ReLU inputs by 2e-7 on average, and of
#   6e6 ReLU inputs a step, 0.42 per unit lie near zero: about one changes sign a step (at
#   step 0 one did: -5.5e-7 in float64, +2.3e-7 in float32, which changed that layer's
#   gradient by 6 %). Adam's first step moves every weight by lr * g / (|g| + eps), about
#   lr whatever |g|, so the 30 gradient entries whose sign changed put weights 2 * lr = 4e-3
#   apart, and the later steps carry that on. The test losses came 1.4e-5 apart with the
#   AVX-512 kernels, 5.4e-4 with the AVX2 ones (ATEN_CPU_CAPABILITY=avx2
#   ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2), which failed the former 1e-4.
#   Nothing separates that from a wrong run: summing the ranks' gradients instead of
#   averaging them (which AdamW nearly forgives, as only eps sees the scale) moves the
#   float64 test loss by 5.4e-4 too.
# - float64 (unit roundoff 1.1e-16): gradients move by ~1e-14 relative (measured 2e-14); a
#   ReLU input changes sign only within ~4e-16 of zero (5e7 inputs a run: 2e-8 expected);
#   Adam turns a gradient difference d into at most lr * d / eps = 2e5 * d of weight a
#   step, and with |g| < 0.1, d < 1e-15, so the weights stay within 2e-10 a step, 2e-9
#   after 8. Measured: weights 7.5e-13 apart, losses and weight norms at most 4.4e-16, the
#   same bits on AVX-512 and AVX2 kernels.
# TOLERANCE sits above that bound and below every difference the two wrong runs give in
# float64: sum instead of mean, test loss 5.4e-4 (5e4 times TOLERANCE), weight norm 1.2e-5,
# second training loss 7.4e-8; per-rank BatchNorm statistics, test loss 1.8e-2, first
# training loss 8.8e-3.
TOLERANCE = 1e-8


@pytest.mark.slow
def test_two_ranks_give_the_metrics_of_one_rank(tmp_path):
    """The same global batch and seeds on 2 ranks (torchrun, gloo) and on 1 (no torchrun),
    in float64: the same test error, and the same test loss, weight norm and training
    losses to TOLERANCE. deep_gd has BatchNorm in every block and transition."""
    script = tmp_path / "optgen_float64.py"
    script.write_text(FLOAT64_CLI)
    # Half the quick run's data (4 steps of 32 images): the same comparison, less training.
    args = ["experiment", "mnist", "--quick", "--networks", "deep_gd"]
    args += ["--train-size", "128", "--test-size", "100"]
    two = torchrun(2, *args, "--out", str(tmp_path / "two"), script=str(script))
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run(
        [sys.executable, str(script), *args, "--out", str(tmp_path / "one")],
        cwd=ROOT, capture_output=True, text=True, env=single_thread_env(), timeout=LIMIT_S,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr
    run_two = report_of(tmp_path / "two")["networks"]["deep_gd"]["runs"]["0"]
    run_one = report_of(tmp_path / "one")["networks"]["deep_gd"]["runs"]["0"]
    assert (run_two["world_size"], run_one["world_size"]) == (2, 1)
    assert run_two["test_error"] == run_one["test_error"]
    for metric in ("test_loss", "weight_norm"):
        assert run_two[metric] == pytest.approx(run_one[metric], rel=0, abs=TOLERANCE), metric
    assert len(run_two["curve"]) == len(run_one["curve"]) == 4
    assert run_two["curve"] == pytest.approx(run_one["curve"], rel=0, abs=TOLERANCE)
    # Only rank 0 prints and writes.
    assert two.stdout.count("mnist deep_gd: test error") == 1


@pytest.mark.slow
def test_two_ranks_run_the_float32_default(tmp_path):
    """The default dtype (float32) on 2 ranks: it runs and writes one report. Its metrics
    are not compared with 1 rank's: see TOLERANCE."""
    two = torchrun(
        2, "experiment", "mnist", "--quick", "--networks", "deep_gd", "--out", str(tmp_path),
        "--train-size", "128", "--test-size", "100",  # half the quick run: 4 steps
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    run = report_of(tmp_path)["networks"]["deep_gd"]["runs"]["0"]
    assert run["world_size"] == 2 and len(run["curve"]) == 4
    assert all(math.isfinite(v) for v in (run["test_loss"], run["weight_norm"], *run["curve"]))
    assert two.stdout.count("mnist deep_gd: test error") == 1
    assert (tmp_path / "mnist.png").read_bytes()[:8] == PNG


GRADIENTS = textwrap.dedent("""
    import os
    import sys

    import torch
    import torch.nn.functional as F

    from optgen.experiments.distributed import (
        convert_batchnorm, data_parallel, join, leave, rank_batches,
    )
    from optgen.experiments.image_data import augment

    torch.set_default_dtype(torch.float64)
    world = join()
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.Conv2d(4, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
        torch.nn.Linear(4 * 8 * 8, 10),
    )
    if sys.argv[2] == "global":
        model = convert_batchnorm(model)
    g = torch.Generator().manual_seed(1)
    images, labels = torch.rand(64, 1, 12, 12, generator=g), torch.randint(0, 10, (64,), generator=g)
    offsets = torch.randint(0, 3, (64, 2), generator=g)
    index = torch.tensor(rank_batches(world, 64, 16, seed=0, epoch=0)[1])
    ddp = data_parallel(model, world)
    F.cross_entropy(ddp(augment(images[index], offsets[index], 1)), labels[index]).backward()
    if world.is_main:
        grads = {name: p.grad for name, p in model.named_parameters()}
        torch.save({**grads, **dict(model.named_buffers())}, sys.argv[1])
    leave(world)
    # Out without the interpreter's teardown: a gloo group that a DDP still references
    # is destroyed at exit from a C++ destructor, which aborted rank 1 now and then
    # ("terminate called without an active exception") after its work was done.
    sys.stdout.flush()
    os._exit(0)
    """)


@pytest.mark.slow
def test_global_batchnorm_gives_two_ranks_the_gradient_of_one_in_float64(tmp_path):
    """In float64 the 2-rank gradient and running statistics are the 1-rank ones to 1e-10:
    the sharding, the augmentation, DDP's averaging and the global BatchNorm are exact.
    With plain BatchNorm (per-rank statistics) they are not."""
    import torch

    script = tmp_path / "gradients.py"
    script.write_text(GRADIENTS)
    for norm in ("global", "plain"):
        one = subprocess.run(
            [sys.executable, str(script), str(tmp_path / f"one_{norm}.pt"), norm],
            capture_output=True, text=True, env=single_thread_env(), timeout=LIMIT_S,
        )  # fmt: skip
        assert one.returncode == 0, one.stderr
        two = torchrun(2, str(tmp_path / f"two_{norm}.pt"), norm, script=str(script))
        assert two.returncode == 0, two.stderr[-3000:]
    gap = {}
    for norm in ("global", "plain"):
        a = torch.load(tmp_path / f"one_{norm}.pt")
        b = torch.load(tmp_path / f"two_{norm}.pt")
        gap[norm] = max((a[k].double() - b[k].double()).abs().max().item() for k in a)
    assert gap["global"] < 1e-10
    assert gap["plain"] > 1e-4
