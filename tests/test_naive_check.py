"""The generated test that compares a module's fused forward with its rule evaluated as
written (`naive_forward`, optgen/backend/naive.py): it catches a miscompile that every
other generated test passes, it agrees with the reference interpreter, and its writer
shares no code with lowering."""

from __future__ import annotations

import ast
import functools
import importlib.util
import random
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from conftest import construct, networks_and_classes
from reference_rules import rich_program

import optgen
from optgen.backend.naive import naive_network
from optgen.reference import evaluate

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TEST = "test_forward_matches_the_rule_evaluated_statement_by_statement"
DIM, DEPTH = 4, 3
SHAPES = {"vector": (3, DIM), "image": (2, DIM, 5, 5), "sequence": (2, 3, DIM)}

SUM_RULE = """
network SumBug {
    state x, m
    param t = 0.5
    block T = mlp()
    layers 3
    update {
        x+ = x - t*T(x)
        m+ = sum(i = 0..k, x[i])
    }
    output m
}
"""


@functools.cache
def _compile(text: str, filename: str) -> dict[str, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optgen.OptgenWarning)
        return optgen.compile_source(text, filename)


def _write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def _generated_test(folder: Path, stem: str):
    """The generated test function, imported from `folder` beside its own module."""
    sys.modules.pop(stem, None)  # the module of another folder, under the same name
    sys.path.insert(0, str(folder))
    try:
        spec = importlib.util.spec_from_file_location(f"test_{stem}", folder / f"test_{stem}.py")
        tests = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(tests)
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop(stem, None)
    return getattr(tests, TEST)


def _miscompiled(files: dict[str, str], stem: str, old: str, new: str) -> dict[str, str]:
    """The files with the module's forward altered: `old` (once in it) made `new`."""
    source = files[f"{stem}.py"]
    assert source.count(old) == 1, f"{old!r} is not once in the forward"
    return {**files, f"{stem}.py": source.replace(old, new)}


# Each case: a rule, and a textual miscompile of its fused forward that leaves the
# module's shapes, gradients and determinism as they were.
MISCOMPILES = {
    # SumBug: the sum reads x_{k+1}, written before it, where the rule says x_k.
    "sum_reads_the_new_iterate": (
        SUM_RULE,
        "sum_bug",
        "history_sum = torch.add(history_sum, x)",
        "history_sum = torch.add(history_sum, x_next)",
    ),
    # Updates swapped: y reads x after x took its next value (the momentum is lost).
    "nesterov_updates_swapped": (
        (EXAMPLES / "nesterov.opt").read_text(),
        "nesterov",
        "y = torch.lerp(x_next, x, -beta)\n            x = x_next",
        "x = x_next\n            y = torch.lerp(x_next, x, -beta)",
    ),
    # A coefficient one part in ten million off.
    "nesterov_coefficient": (
        (EXAMPLES / "nesterov.opt").read_text(),
        "nesterov",
        "y = torch.lerp(x_next, x, -beta)",
        "y = torch.lerp(x_next, x, -beta * (1 + 1e-7))",
    ),
    # The step of an implicit statement, inside the map its solver iterates.
    "ppm_step_inside_the_solve": (
        (EXAMPLES / "ppm.opt").read_text(),
        "ppm",
        "x_map_out = torch.add(x, T_z, alpha=-t)",
        "x_map_out = torch.add(x, T_z, alpha=-0.9 * t)",
    ),
}


@pytest.mark.parametrize("case", sorted(MISCOMPILES))
def test_the_generated_naive_test_fails_on_a_miscompile_and_passes_without(tmp_path, case):
    text, stem, old, new = MISCOMPILES[case]
    files = _compile(text, f"{stem}.opt")
    _generated_test(_write(tmp_path / "correct", files), stem)()
    wrong = _write(tmp_path / "wrong", _miscompiled(files, stem, old, new))
    with pytest.raises(AssertionError, match="Tensor-likes are not close"):
        _generated_test(wrong, stem)()


def test_the_other_generated_tests_pass_the_swapped_updates(tmp_path):
    # Why the naive test is there: shapes, gradients and gradcheck cannot see this one
    # (the gradient test does see the sum's: block T of the last layer reaches m there).
    text, stem, old, new = MISCOMPILES["nesterov_updates_swapped"]
    files = _miscompiled(_compile(text, f"{stem}.opt"), stem, old, new)
    folder = _write(tmp_path / "wrong", files)
    others = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"test_{stem}.py"]
        + ["--deselect", f"test_{stem}.py::{TEST}"],
        capture_output=True,
        text=True,
        cwd=folder,
        timeout=300,
    )
    assert others.returncode == 0, others.stdout[-4000:]


# ---------------------------------------------------------------------- against the reference
def _naive_function(network, suffix: str = ""):
    """naive_forward of `network`, its source executed with torch alone."""
    source = naive_network(network, suffix)
    assert not isinstance(source, str), source
    namespace: dict = {}
    exec("import math\nimport torch\nfrom torch import Tensor, nn\n" + source.text, namespace)
    return namespace[f"naive_forward{suffix}"]


def _build(network, cls, seed: int, depth: int = DEPTH):
    """Float64, random blocks, learnable params off their starts (as test_reference.build)."""
    torch.manual_seed(seed)
    module = construct(cls, DIM, depth=depth).double()
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if not name.startswith("blocks."):
                parameter.add_(0.3 * torch.randn_like(parameter))
            elif network.kind != "explicit":
                parameter.mul_(0.3)
    return module


def _input(network, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1000 + seed)
    return torch.randn(SHAPES[str(network.layout)], generator=generator, dtype=torch.float64)


def _assert_close(actual, expected, rtol):
    scale = max(expected.abs().max().item(), 1.0)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * scale)


CATALOG = "\n".join(p.read_text() for p in sorted(EXAMPLES.glob("*.opt")))
CATALOG_NAMES = [line.split()[1] for line in CATALOG.splitlines() if line.startswith("network ")]


@pytest.fixture(scope="module")
def catalog(compiled_catalog):
    return compiled_catalog


@pytest.mark.parametrize("name", CATALOG_NAMES)
def test_the_naive_forward_of_every_catalog_network_agrees_with_the_reference(catalog, name):
    networks, classes = catalog
    network = networks[name]
    module = _build(network, classes[name], seed=len(name))
    x = _input(network, len(name))
    with torch.no_grad():
        naive = _naive_function(network)(module, x)
        expected = evaluate(network, module, x)
    # Both evaluate the same terms in the same order: they differ by the rounding of
    # coefficients (float64 arithmetic here, exact there) and by the solves' tolerance.
    _assert_close(naive, expected, 1e-12 if network.kind == "explicit" else 1e-9)


RICH_CASES = 20


@pytest.fixture(scope="module")
def rich():
    rng = random.Random(20240611)
    text = "\n".join(rich_program(rng, index) for index in range(RICH_CASES))
    return networks_and_classes(text, "rich.opt")


@pytest.mark.parametrize("index", range(RICH_CASES))
def test_the_naive_forward_of_richer_random_rules_agrees_with_the_reference(rich, index):
    # Sums and windows over states and locals, local history, maps, per-layer and
    # per-channel params, recursive schedules, inits with params.
    networks, classes = rich
    network = networks[f"Rich{index}"]
    module = _build(network, classes[network.name], seed=index, depth=network.depth)
    x = _input(network, index)
    with torch.no_grad():
        naive = _naive_function(network, "_rich")(module, x)
        expected = evaluate(network, module, x)
    _assert_close(naive, expected, 1e-12)


def test_the_naive_forward_agrees_with_the_module_on_the_rich_rules(rich):
    # What the generated test checks, on rules with every construct.
    networks, classes = rich
    for index in range(RICH_CASES):
        network = networks[f"Rich{index}"]
        module = _build(network, classes[network.name], seed=index, depth=network.depth)
        x = _input(network, index)
        with torch.no_grad():
            _assert_close(module(x), _naive_function(network)(module, x), 1e-10)


# ---------------------------------------------------------------------- independence
def test_the_naive_writer_imports_nothing_of_lowering_nor_of_the_reference():
    path = ROOT / "optgen" / "backend" / "naive.py"
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            imported |= {base} | {f"{base}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
    forbidden = ("lower", "plan", "writer", "emit", "models", "reference")
    found = {
        name
        for name in imported
        for part in name.replace("..", ".").split(".")
        if part.startswith(forbidden)
    }
    assert not found, f"optgen/backend/naive.py imports {sorted(found)}"


def test_a_rule_it_does_not_write_gets_a_comment_instead_of_the_test(monkeypatch):
    # A construct naive.py does not know (here: every one) skips the test, saying why.
    from optgen.backend import emit

    monkeypatch.setattr(emit, "naive_network", lambda net: "map prox, which it does not know")
    files = _compile.__wrapped__((EXAMPLES / "gd.opt").read_text(), "gd.opt")
    test = files["test_gd.py"]
    assert TEST not in test and "def naive_forward" not in test
    assert (
        "# No test of the forward against the rule evaluated as written: map prox, which it" in test
    )
    compile(test, "test_gd.py", "exec")


MODEL = """
model Staged {
    input [3, 8, 8]
    stem conv(out=4, kernel=3)
    stage Apg2Image(dim=4, depth=2)
    down conv(out=8, stride=2)
    stage Apg2Image(dim=8, depth=2)
    down pool(out=8) carry output
    stage PpmImage(dim=8, depth=2)
    head classifier(classes=3)
}

network Apg2Image {
    state x, z
    init z = x
    param theta = 2/(k+2)
    param t = 0.5
    block T = conv()
    update {
        y = (1 - theta)*x + theta*z
        z+ = z - (t/theta)*T(y)
        x+ = (1 - theta)*x + theta*z+ + 0.1*(x[0] - x)
    }
}

network PpmImage {
    state x
    param t = 0.5
    block T = conv()
    update { x+ = x - t*T(x+) }
}
"""


def _stage_test(folder: Path, stem: str):
    """The stage test of a generated model's test file in `folder`."""
    sys.modules.pop(stem, None)
    sys.path.insert(0, str(folder))
    try:
        spec = importlib.util.spec_from_file_location(f"test_{stem}", folder / f"test_{stem}.py")
        tests = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(tests)
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop(stem, None)
    return tests.test_each_stage_matches_its_rule_evaluated_statement_by_statement


def test_a_models_test_checks_each_stage_explicit_and_solved(tmp_path):
    # Stage 1 continues the recurrence (start 2: theta at k = 2, 3); stage 2 solves.
    files = _compile(MODEL, "staged.opt")
    test = files["test_staged.py"]
    assert "(1, naive_forward_apg2_image, (8, 4, 4), False)" in test
    assert "(2, naive_forward_ppm_image, (8, 2, 2), True)" in test
    _stage_test(_write(tmp_path / "model", files), "staged")()


# A miscompile this test found: a coefficient holding a learnable param and k (t/theta,
# theta = 2/(k+2)) read the loop's layer number, not start + it, in a stage continuing the
# recurrence (fixed in backend/lower_terms.py: such a coefficient reads a per-layer table).
def test_a_learnable_coefficient_in_k_reads_start_plus_k_in_a_continuing_stage(tmp_path):
    text = MODEL.replace(
        "param theta = 2/(k+2)\n    param t = 0.5",
        "param theta = 2/(k+2)\n    param t = 0.5 learnable positive",
    )
    assert text != MODEL
    files = _compile(text, "staged.opt")
    _stage_test(_write(tmp_path / "model", files), "staged")()


def test_a_continuing_stage_with_a_sum_is_skipped_with_its_reason():
    # Run alone from k > 0, a sum over history lacks the iterates before: the reference
    # refuses it too. Stage 0 starts at k = 0 and keeps its test.
    text = """
model Summed {
    input [3, 8, 8]
    stem conv(out=4, kernel=3)
    stage DenseImage(dim=4, depth=2)
    stage DenseImage(dim=4, depth=2)
    head classifier(classes=3)
}

network DenseImage {
    state x
    block T = conv()
    update { x+ = x - 0.5*T(x) - 0.1*sum(i = 0..k, x[i]) }
}
"""
    test = _compile(text, "summed.opt")["test_summed.py"]
    assert "(0, naive_forward_dense_image, (4, 8, 8), False)" in test
    assert "(1, naive_forward_dense_image" not in test
    assert "# No test of a stage against its rule evaluated as written: stage 1: a sum" in test
