"""`optgen experiment` (quick form), `check --markdown` against docs/catalog.md, `--plot`, `--graph`."""

import json
import math
import subprocess
import sys

import pytest
from conftest import EXAMPLES, ROOT, run_optgen

NETWORKS = ["gd", "heavy_ball", "nesterov", "nesterov_k", "dense", "ladmm"]
PNG = b"\x89PNG\r\n\x1a\n"


def png_size(path):
    from PIL import Image

    with Image.open(path) as image:
        image.verify()
        return image.size


@pytest.mark.parametrize(
    "name, metrics",
    [
        ("rings", {"test_accuracy", "margin", "test_loss"}),
        ("parity", {"test_accuracy", "test_loss"}),
        ("telgarsky", {"test_mse", "test_loss"}),
    ],
)
def test_quick_experiment_writes_json_and_png_for_every_network(tmp_path, name, metrics):
    result = run_optgen("experiment", name, "--quick", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / f"{name}.json").read_text())
    assert report["experiment"] == name
    assert report["settings"]["seeds"] == 1 and report["settings"]["steps"] > 0
    assert list(report["networks"]) == NETWORKS
    for label, entry in report["networks"].items():
        assert set(entry["metrics"]) == metrics, label
        for metric in entry["metrics"].values():
            assert (
                math.isfinite(metric["mean"])
                and math.isfinite(metric["std"])
                and metric["diverged"] == 0
            )
        # Same data for all: the digest of the data set is recorded per network.
        assert entry["data_digest"] == report["data_digest"]
        assert entry["wall_time_s"] > 0
        assert entry["certificate"]["universal"] is True
        assert (tmp_path / "modules" / f"{label}.py").is_file()
    assert (tmp_path / f"{name}.png").read_bytes()[:8] == PNG
    width, height = png_size(tmp_path / f"{name}.png")
    assert width > 500 and height > 300


def test_a_broken_network_runs_and_shows_its_failed_certificate(tmp_path):
    broken = tmp_path / "hb15.opt"
    broken.write_text(
        (EXAMPLES / "heavy_ball.opt")
        .read_text()
        .replace("param beta = 0.5 in [0, 1)", "param beta = 1.5")
        .replace("HeavyBall", "HeavyBall15")
    )
    result = run_optgen(
        "experiment",
        "rings",
        "--quick",
        "--out",
        str(tmp_path / "out"),
        "--networks",
        f"gd,{broken}",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out" / "rings.json").read_text())
    entry = report["networks"][str(broken)]
    assert entry["certificate"]["zero_stable"] is False
    assert entry["certificate"]["universal"] is False
    assert any("root 1.5" in r for r in entry["certificate"]["reasons"])
    assert set(entry["metrics"]) == {"test_accuracy", "margin", "test_loss"}
    assert entry["data_digest"] == report["networks"]["gd"]["data_digest"]


def test_unknown_network_is_a_clear_error(tmp_path):
    result = run_optgen(
        "experiment", "rings", "--quick", "--out", str(tmp_path), "--networks", "gdd"
    )
    assert result.returncode == 1
    assert result.stderr.startswith("optgen: error: no network 'gdd': give a catalog name (")
    assert "Traceback" not in result.stderr


def test_without_the_extra_the_command_says_how_to_install_it(tmp_path):
    blocker = tmp_path / "blocked"
    blocker.mkdir()
    (blocker / "matplotlib.py").write_text("raise ImportError('not installed')\n")
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys; sys.path.insert(0, {str(blocker)!r}); from optgen.cli import main; sys.exit(main())",
            "experiment",
            "rings",
            "--quick",
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 1
    assert (
        "optgen experiment needs matplotlib and tqdm: pip install 'optgen[experiments]'"
        in result.stderr
    )
    assert "Traceback" not in result.stderr


def test_markdown_table_of_the_catalog_equals_docs_catalog():
    files = sorted(str(p.relative_to(ROOT)) for p in EXAMPLES.glob("*.opt"))
    result = run_optgen("check", *files, "--markdown")
    assert result.returncode == 0, result.stderr
    assert (
        result.stdout == (ROOT / "docs" / "catalog.md").read_text()
    ), "regenerate: optgen check examples/*.opt --markdown > docs/catalog.md"


def test_check_plot_writes_roots_and_the_radius_over_beta(tmp_path):
    out = tmp_path / "hb.png"
    result = run_optgen("check", str(EXAMPLES / "heavy_ball.opt"), "--plot", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:8] == PNG
    width, _ = png_size(out)
    assert width > 600  # two panels: the roots and the radius over beta


def test_mermaid_graph_of_nesterov_names_states_block_call_and_combinations():
    result = run_optgen("inspect", str(EXAMPLES / "nesterov.opt"), "--graph", "mermaid")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "flowchart LR"
    labels = {
        line.split('["', 1)[1].rsplit('"]', 1)[0]
        for line in lines[1:]
        if '["' in line and "-->" not in line
    }
    assert {"x[k]", "y[k]", "x+", "y+", "T(.)"} <= labels
    assert sum(1 for label in labels if label == "+") >= 1
    combinations = [line for line in lines if '["+"]' in line]
    assert len(combinations) == 2
    edges = [line for line in lines if "-->" in line]
    nodes = {
        line.split('["', 1)[0].strip() for line in lines[1:] if '["' in line and "-->" not in line
    }
    for edge in edges:
        source, target = edge.split("-->")
        assert source.strip() in nodes and target.split("|")[-1].strip() in nodes


def test_dot_graph_is_a_digraph():
    result = run_optgen("inspect", str(EXAMPLES / "gd.opt"), "--graph", "dot")
    assert result.returncode == 0
    assert result.stdout.startswith("digraph GD {") and result.stdout.rstrip().endswith("}")
