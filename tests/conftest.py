import os

# Under pytest-xdist each worker is a process of its own, and torch gives each as many
# threads as the machine has cores: two workers on two cores then run four busy threads,
# and torch's small operators (a conv on 4x4 images, a gradcheck's thousands of calls)
# slow down by 10-20x waiting for one another (a generated gradcheck took 56 s in the
# suite against 2.5 s alone). So a worker, and every process it starts (the CLI, the
# generated tests run as a user would, the distributed ranks), keeps to one thread. A
# worker collects generated/ as well as tests/ before it runs anything, so this conftest
# is imported first in each. A plain `pytest` run without workers keeps torch's default.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

import contextlib
import importlib.util
import io
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
GENERATED = ROOT / "generated"


def construct(cls, dim: int, **kwargs):
    """A generated network class built at width `dim`, its other spaces (`SIZES`, of
    `state y: m`) each a little wider: dim + 3, dim + 4, ..."""
    sizes = [dim + 3 + i for i, _ in enumerate(getattr(cls, "SIZES", ()))]
    return cls(dim, *sizes, **kwargs)


def load_generated(stem: str, prefix: str = "generated", registered: bool = False):
    """Import generated/<stem>.py as a fresh module (`registered`: in `sys.modules` too, as
    an import would, which timm's `register_model` reads)."""
    name = f"{prefix}_{stem}"
    spec = importlib.util.spec_from_file_location(name, GENERATED / f"{stem}.py")
    module = importlib.util.module_from_spec(spec)
    if registered:
        sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def assert_generated_tests_pass(folder: Path, cwd: Path, timeout: int = 300) -> None:
    """Run the generated tests below `folder` with plain pytest, as a user would."""
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(folder)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
    )
    assert tests.returncode == 0, tests.stdout[-6000:] + tests.stderr[-2000:]


# The commands a test runs in its own process, through `optgen.cli.main` as `python -m
# optgen` runs them: a fresh interpreter costs about a second of CPU a call, some hundreds
# of seconds over the suite. `experiment` stays a process of its own (it trains: threads,
# seeds and the default dtype are process-wide, and its API warnings print to stderr), and
# so does a call that sets its own working folder or environment.
IN_PROCESS_COMMANDS = frozenset({"compile", "check", "inspect", "match"})


def run_optgen(
    *args: str, cwd: Path | None = None, env: dict | None = None
) -> subprocess.CompletedProcess:
    if cwd is None and env is None and args and args[0] in IN_PROCESS_COMMANDS:
        if Path.cwd() == ROOT:
            return _run_in_process(args)
    return subprocess.run(
        [sys.executable, "-m", "optgen", *args],
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def _run_in_process(args) -> subprocess.CompletedProcess:
    from optgen import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        with warnings.catch_warnings():
            try:
                code = cli.main(list(args))
            except SystemExit as exit:  # argparse: --help, a usage error
                code = exit.code if isinstance(exit.code, int) else int(exit.code is not None)
    command = [sys.executable, "-m", "optgen", *args]
    return subprocess.CompletedProcess(command, code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="session")
def compiled_catalog():
    """Every network of examples/*.opt compiled as one file, once per worker (the reference
    and the naive-forward checks both walk it): (IR by name, module class by name)."""
    text = "\n".join(p.read_text() for p in sorted(EXAMPLES.glob("*.opt")))
    return networks_and_classes(text, "catalog.opt")


def networks_and_classes(text: str, filename: str):
    """(IR by name, module class by name) of a source."""
    from optgen import OptgenWarning, api, loads

    with warnings.catch_warnings():
        # Rules that fail their convergence conditions compile with a warning: not ours.
        warnings.simplefilter("ignore", OptgenWarning)
        classes = loads(text, filename)
        networks = {n.name: n for n in api.frontend(text, filename).networks}
    return networks, classes


@pytest.fixture
def opt_file(tmp_path):
    """Write a .opt text into tmp_path and return its path."""

    def write(text: str, name: str = "rule.opt") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


def import_timm():
    """timm, or a skip when it is not installed (`pip install 'optgen[timm]'`).

    On these machines the package index's torchvision is a CUDA build whose C ops cannot
    load beside the CPU torch, so `import timm` fails at `torchvision::nms` (then `qnms`)
    while torchvision registers their fake kernels. Defining those two schemas first lets
    the import go through; nothing here calls them. Users with a matching torchvision need
    nothing of the kind.
    """
    import pytest
    import torch

    try:
        import timm
    except ImportError:
        pytest.skip("timm is not installed: pip install 'optgen[timm]'")
    except RuntimeError:
        global _TORCHVISION_STUBS
        if _TORCHVISION_STUBS is None:
            _TORCHVISION_STUBS = torch.library.Library("torchvision", "DEF")
            for name in ("nms", "qnms"):
                _TORCHVISION_STUBS.define(
                    f"{name}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
                )
        for module in [m for m in sys.modules if m.split(".")[0] in ("timm", "torchvision")]:
            del sys.modules[module]
        import timm
    return timm


_TORCHVISION_STUBS = None  # the library defining the two schemas, kept alive
