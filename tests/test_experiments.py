"""`optgen experiment` (quick form), `check --markdown` against docs/catalog.md, `--plot`, `--graph`."""

import ast
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


def test_unknown_network_is_a_clear_error_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    result = run_optgen("experiment", "rings", "--quick", "--out", str(out), "--networks", "gd,gdd")
    known = ", ".join(sorted(p.stem for p in EXAMPLES.glob("*.opt")))
    assert result.returncode == 1
    assert result.stderr == (
        f"optgen: error: no network 'gdd': give a catalog name ({known}) or a .opt file\n"
    )
    assert "Traceback" not in result.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    "network, message",
    [
        (
            "nesterov_conv",
            "optgen: error: network NesterovConv (nesterov_conv) takes [N, dim, H, W] inputs;"
            " the rings experiment trains networks on [..., dim] vectors\n",
        ),
        (
            "nesterov_transformer",
            "optgen: error: network NesterovTransformer (nesterov_transformer) takes"
            " [N, L, dim] inputs; the rings experiment trains networks on [..., dim] vectors\n",
        ),
    ],
)
def test_a_network_of_another_layout_is_refused_before_anything_is_written(
    tmp_path, network, message
):
    out = tmp_path / "out"
    result = run_optgen("experiment", "rings", "--out", str(out), "--networks", f"gd,{network}")
    assert result.returncode == 1
    assert result.stderr == message
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert not out.exists()


def test_every_network_of_another_layout_is_named_and_the_out_folder_is_left_untouched(
    tmp_path,
):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine\n")
    result = run_optgen(
        "experiment",
        "parity",
        "--quick",
        "--out",
        str(out),
        "--networks",
        "ppm_conv,gd,nesterov_transformer",
    )
    assert result.returncode == 1
    assert result.stderr == (
        "optgen: error: network PpmConv (ppm_conv) takes [N, dim, H, W] inputs;"
        " network NesterovTransformer (nesterov_transformer) takes [N, L, dim] inputs;"
        " the parity experiment trains networks on [..., dim] vectors\n"
    )
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "mine\n"


OTHER_LAYOUTS = {
    "nesterov_conv": ("NesterovConv", "[N, dim, H, W]"),
    "nesterov_convnext": ("NesterovConvnext", "[N, dim, H, W]"),
    "ppm_conv": ("PpmConv", "[N, dim, H, W]"),
    "nesterov_transformer": ("NesterovTransformer", "[N, L, dim]"),
}


def test_the_layout_of_every_catalog_network_is_read_from_its_generated_class():
    from optgen.experiments import UnsupportedLayout
    from optgen.experiments.networks import prepare

    for path in sorted(EXAMPLES.glob("*.opt")):
        if path.stem in OTHER_LAYOUTS:
            class_name, layout = OTHER_LAYOUTS[path.stem]
            with pytest.raises(UnsupportedLayout) as err:
                prepare([path.stem], "telgarsky")
            assert str(err.value) == (
                f"network {class_name} ({path.stem}) takes {layout} inputs;"
                " the telgarsky experiment trains networks on [..., dim] vectors"
            )
        else:
            sources, files = prepare([path.stem], "telgarsky")
            assert [s.layout for s in sources] == ["[..., dim]"], path.stem
            assert [s.label for s in sources] == [path.stem]
            assert set(files) == {f"{path.stem}.py", f"test_{path.stem}.py"}


PUBLIC_API = {
    "compile_source",
    "check_source",
    "compile_and_check",
    "costs",
    "load",
    "OptgenError",
    "__version__",
}


def _optgen_imports(path):
    """(module, names) of every import of an optgen module in a file of optgen/experiments/."""
    package = ["optgen", "experiments"]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            yield module, [alias.name for alias in node.names]


def test_the_experiments_use_only_the_public_api_of_the_compiler():
    files = sorted((ROOT / "optgen" / "experiments").glob("*.py"))
    assert {p.name for p in files} >= {"__init__.py", "networks.py", "train.py"}
    used = set()
    for path in files:
        for module, names in _optgen_imports(path):
            if module == "optgen":
                assert set(names) <= PUBLIC_API, (path.name, names)
                used |= set(names)
            elif module.startswith("optgen."):
                # Its own modules, and where the installed package keeps the catalog.
                allowed = module.startswith("optgen.experiments") or module == "optgen.resources"
                assert allowed, f"{path.name} imports the compiler internal {module}"
    assert {"compile_and_check"} <= used
    assert not (ROOT / "optgen" / "experiment.py").exists()


def test_every_package_of_optgen_is_listed_for_the_wheel():
    tomllib = pytest.importorskip("tomllib")
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "optgen").rglob("__init__.py")
    }
    assert found <= listed


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
    files += sorted(str(p.relative_to(ROOT)) for p in (EXAMPLES / "models").glob("*.opt"))
    result = run_optgen("check", *files, "--markdown")
    assert result.returncode == 0, result.stderr
    # The same run says that every param of the catalog is read (no "never read" warning).
    assert "never read" not in result.stderr
    assert (
        result.stdout == (ROOT / "docs" / "catalog.md").read_text()
    ), "regenerate: optgen check examples/*.opt examples/models/*.opt --markdown > docs/catalog.md"


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
