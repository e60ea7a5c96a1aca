"""Generated files in the user's toolchain (issue 15): the destination's black settings,
autocast, the exportable fixed-iteration path of implicit modules, ONNX and torch.fx."""

import random
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from conftest import (
    EXAMPLES,
    assert_generated_tests_pass,
    construct,
    load_generated,
    run_optgen,
)
from fuzzing import generate_program

import optgen
from optgen.backend.formatting import DEFAULT_LINE_LENGTH, for_directory

HEAVY_BALL = (EXAMPLES / "heavy_ball.opt").read_text()


# ---------------------------------------------------------------- formatting
def test_a_destination_without_black_settings_gets_blacks_defaults(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "pyproject.toml").write_text('[project]\nname = "mine"\n')
    assert for_directory(repo / "models").line_length == DEFAULT_LINE_LENGTH == 88
    rule = repo / "heavy_ball.opt"
    rule.write_text(HEAVY_BALL)
    result = run_optgen("compile", str(rule), "-o", str(repo / "models"))
    assert result.returncode == 0, result.stderr
    module = (repo / "models" / "heavy_ball.py").read_text()
    import black

    # Formatted at 88 columns, not at this repository's 100.
    assert black.format_str(module, mode=black.Mode()) == module
    assert black.format_str(module, mode=black.Mode(line_length=100)) != module
    check = subprocess.run(
        [sys.executable, "-m", "black", "--check", "-q", "models"],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr


def test_the_destinations_black_section_and_line_length_override(tmp_path):
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    (repo / "pyproject.toml").write_text(
        "[tool.black]\nline-length = 120\nskip-magic-trailing-comma = true\n"
    )
    found = for_directory(repo / "src" / "not_yet_made")
    assert found.line_length == 120 and found.skip_magic_trailing_comma
    assert found.config == str(repo / "pyproject.toml")
    assert for_directory(repo / "src", line_length=70).line_length == 70
    # The nearest pyproject.toml *with a [tool.black] table* decides: an inner project
    # without one (a requires-python only) does not reset the line length.
    inner = repo / "src" / "inner"
    inner.mkdir()
    (inner / "pyproject.toml").write_text('[project]\nname = "inner"\nrequires-python = ">=3.10"\n')
    assert for_directory(inner / "out").line_length == 120
    rule = tmp_path / "heavy_ball.opt"
    rule.write_text(HEAVY_BALL)
    for args, columns in (((), 120), (("--line-length", "60"), 60)):
        out = repo / "src" / f"at_{columns}"
        result = run_optgen("compile", str(rule), "-o", str(out), *args)
        assert result.returncode == 0, result.stderr
        text = (out / "heavy_ball.py").read_text()
        mode = found.mode() if columns == 120 else for_directory(out, columns).mode()
        import black

        assert black.format_str(text, mode=mode) == text
    assert run_optgen("compile", str(rule), "--line-length", "0").returncode == 1


def test_the_api_formats_as_blacks_defaults_or_at_a_given_line_length():
    import black

    default = optgen.compile_source(HEAVY_BALL, "heavy_ball.opt")["heavy_ball.py"]
    assert black.format_str(default, mode=black.Mode()) == default
    wide = optgen.compile_source(HEAVY_BALL, "heavy_ball.opt", line_length=100)["heavy_ball.py"]
    assert black.format_str(wide, mode=black.Mode(line_length=100)) == wide
    with pytest.raises(ValueError, match="line_length"):
        optgen.compile_source(HEAVY_BALL, "heavy_ball.opt", line_length=0)


@pytest.mark.parametrize("layout", ["bare", "package", "importlib"])
def test_a_pair_copied_into_a_fresh_repository_passes_black_and_pytest(tmp_path, layout):
    repo = tmp_path / "fresh"
    folder = repo / "models"
    folder.mkdir(parents=True)
    (repo / "pyproject.toml").write_text('[project]\nname = "fresh"\n')
    if layout == "package":
        (folder / "__init__.py").write_text("")
    for name, text in optgen.compile_source(HEAVY_BALL, "heavy_ball.opt").items():
        if "heavy_ball" in name:
            (folder / name).write_text(text)
    check = subprocess.run(
        [sys.executable, "-m", "black", "--check", "-q", "."],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr
    args = ["--import-mode=importlib"] if layout == "importlib" else []
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args, "models"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert tests.returncode == 0, tests.stdout[-3000:]


# ---------------------------------------------------------------- autocast
def _catalog_modules():
    """(stem, class) of every generated catalog network and model."""
    names = sorted(
        p.stem
        for p in (EXAMPLES.parent / "generated").glob("*.py")
        if not p.name.startswith("test_")
    )
    for stem in names:
        module = load_generated(stem)
        yield stem, getattr(module, module.__all__[0])


def _instance_and_input(cls, source: str):
    torch.manual_seed(0)
    if hasattr(cls, "INPUT_SIZE"):  # a model
        return cls(), torch.randn(1, *cls.INPUT_SIZE)
    module = construct(cls, 8, depth=2)
    if "[N, dim, H, W]" in source:
        return module, torch.randn(2, 8, 6, 6)
    if "[N, L, dim]" in source:
        return module, torch.randn(2, 5, 8)
    return module, torch.randn(2, 8)


def _forward_backward_under_autocast(module, x, dtype) -> None:
    x = x.requires_grad_()
    with warnings.catch_warnings(), torch.autocast("cpu", dtype=dtype):
        warnings.simplefilter("ignore", RuntimeWarning)  # a loose solve in low precision
        out = module(x)
    assert torch.isfinite(out.float()).all()
    out.float().square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.slow
def test_every_catalog_network_and_model_runs_under_bfloat16_autocast():
    """The catalog's Deq crashed here (Anderson's mixed iterate left in bfloat16)."""
    ran = []
    for stem, cls in _catalog_modules():
        if hasattr(cls, "INPUT_SIZE") and stem not in ("deep_apg2", "iso_vit_apg2"):
            continue  # the models repeat their stage networks: two of them cover the parts
        source = (EXAMPLES.parent / "generated" / f"{stem}.py").read_text()
        module, x = _instance_and_input(cls, source)
        _forward_backward_under_autocast(module, x, torch.bfloat16)
        ran.append(stem)
    assert {"deq", "ppm", "nesterov_transformer", "deep_apg2", "iso_vit_apg2"} <= set(ran)


LERP_RULE = """
network Mix {
    state x
    param a = 0.3
    block T = mlp(hidden=dim)
    update { x+ = (1 - a)*x + a*T(x) }
}
"""


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_rule_lowered_to_lerp_runs_under_autocast(dtype):
    source = optgen.compile_source(LERP_RULE, "mix.opt")["mix.py"]
    assert "torch.lerp(x, T_x.to(x.dtype), a)" in source  # the block output takes x's dtype
    namespace: dict = {}
    exec(compile(source, "mix.py", "exec"), namespace)
    torch.manual_seed(0)
    module = namespace["Mix"](8, depth=2)
    _forward_backward_under_autocast(module, torch.randn(4, 8), dtype)


@pytest.mark.slow
def test_random_valid_rules_run_under_bfloat16_autocast():
    rng = random.Random(15)
    ran = 0
    while ran < 12:
        text = generate_program(rng)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optgen.OptgenWarning)
                outputs = optgen.compile_source(text, "fuzz.opt")
        except optgen.OptgenError:
            continue
        for name, source in outputs.items():
            if name.startswith("test_"):
                continue
            namespace: dict = {}
            exec(compile(source, name, "exec"), namespace)
            cls = namespace[namespace["__all__"][0]]
            torch.manual_seed(0)
            _forward_backward_under_autocast(cls(4, depth=2), torch.randn(3, 4), torch.bfloat16)
            ran += 1


# ---------------------------------------------------------------- the exportable path
IMPLICIT = {
    "ppm": ("PPM", (3, 8)),
    "pgd_implicit": ("PGDImplicit", (3, 8)),
    "fista_implicit": ("FISTAImplicit", (3, 8)),
    "deq": ("Deq", (3, 8)),
    "ppm_conv": ("PpmConv", (2, 4, 5, 5)),
}


def _implicit(stem: str, iterations: int = 6):
    class_name, shape = IMPLICIT[stem]
    module = load_generated(stem)
    cls = getattr(module, module.__all__[0])
    torch.manual_seed(0)
    m = cls(shape[1], depth=2).eval().fixed_iterations(iterations)
    return m, torch.randn(*shape, generator=torch.Generator().manual_seed(1))


def test_fixed_iterations_runs_exactly_n_steps_and_records_nothing():
    module, x = _implicit("ppm", iterations=4)
    calls = []
    block = module.blocks["T"][0]
    block.register_forward_hook(lambda *_: calls.append(1))
    out = module(x)
    assert len(calls) == 4 and module.solver_stats == []
    # The tolerance path stays the default and keeps its reporting.
    fresh, _ = _implicit("ppm")
    ppm = load_generated("ppm")
    fresh.solver = dict(getattr(ppm, ppm.__all__[0])(8).solver)
    fresh(x)
    assert fresh.solver_stats and fresh.solver_stats[0]["phase"] == "forward"
    assert out.shape == x.shape
    with pytest.raises(ValueError, match="iterations"):
        module.fixed_iterations(0)


def test_the_language_declares_the_fixed_iteration_solver(tmp_path):
    text = (EXAMPLES / "ppm.opt").read_text()
    text = text.replace(text[text.index("solver") : text.index("\n", text.index("solver"))], "")
    text = text.replace("update {", "solver fixed_point(iterations=5)\n    update {", 1)
    outputs = optgen.compile_source(text, "ppm.opt")
    assert "'iterations': 5" in outputs["ppm.py"] or '"iterations": 5' in outputs["ppm.py"]
    for name, source in outputs.items():
        (tmp_path / name).write_text(source)
    assert_generated_tests_pass(tmp_path, tmp_path)
    bad = text.replace("iterations=5", "iterations=2.5")
    with pytest.raises(optgen.OptgenError, match="option iterations must be an integer"):
        optgen.compile_source(bad, "ppm.opt")


@pytest.mark.slow
@pytest.mark.parametrize("stem", sorted(IMPLICIT))
def test_the_fixed_iteration_path_compiles_fullgraph_and_exports(stem):
    torch._dynamo.reset()
    module, x = _implicit(stem)
    with torch.no_grad():
        expected = module(x)
        compiled = torch.compile(module, fullgraph=True)
        torch.testing.assert_close(compiled(x), expected, rtol=1e-4, atol=1e-5)
    program = torch.export.export(module, (x,))
    torch.testing.assert_close(program.module()(x), expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- ONNX and fx
onnxruntime = pytest.importorskip("onnxruntime", reason="pip install 'optgen[test]'")

EXPLICIT = {
    "gd": ("GD", (3, 8)),
    "heavy_ball": ("HeavyBall", (3, 8)),
    "nesterov": ("Nesterov", (3, 8)),
    "nesterov_k": ("NesterovK", (3, 8)),
    "dense": ("Dense", (3, 8)),
    "ladmm": ("LADMM", (3, 8)),
    "heavy_ball_channel": ("HeavyBallChannel", (3, 8)),
    "lista": ("Lista", (3, 8)),
    "nesterov_conv": ("NesterovConv", (2, 8, 5, 5)),
    "nesterov_convnext": ("NesterovConvnext", (2, 8, 6, 6)),
    "nesterov_transformer": ("NesterovTransformer", (2, 3, 8)),
}


def _explicit(stem: str):
    class_name, shape = EXPLICIT[stem]
    torch.manual_seed(0)
    module = getattr(load_generated(stem), class_name)(8, depth=2).eval()
    return module, torch.randn(*shape, generator=torch.Generator().manual_seed(1))


def _onnx_matches_eager(module, x, path: Path) -> None:
    """Exported with the dynamo exporter and a dynamic batch; run on another batch size."""
    batch = torch.export.Dim("batch", min=1, max=64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module, (x,), dynamo=True, dynamic_shapes=({0: batch},), verbose=False
        )
    program.save(str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    other = torch.randn(x.shape[0] + 2, *x.shape[1:], generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = module(other)
    (out,) = session.run(None, {session.get_inputs()[0].name: other.numpy()})
    torch.testing.assert_close(torch.from_numpy(out), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("stem", sorted(EXPLICIT))
def test_explicit_catalog_modules_export_to_onnx_and_trace_with_fx(stem, tmp_path):
    module, x = _explicit(stem)
    _onnx_matches_eager(module, x, tmp_path / f"{stem}.onnx")
    traced = torch.fx.symbolic_trace(module)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), module(x), rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.parametrize("stem", sorted(IMPLICIT))
def test_the_fixed_iteration_path_exports_to_onnx(stem, tmp_path):
    module, x = _implicit(stem)
    _onnx_matches_eager(module, x, tmp_path / f"{stem}.onnx")


def test_onnx_is_part_of_the_test_extra():
    text = (EXAMPLES.parent / "pyproject.toml").read_text()
    test_extra = next(line for line in text.splitlines() if line.startswith("test = ["))
    assert all(name in test_extra for name in ("onnx", "onnxscript", "onnxruntime"))


# ---------------------------------------------------------------- precision-aware solves
def test_a_tolerance_below_float32_is_a_located_warning_and_its_tests_pass(tmp_path, opt_file):
    text = (EXAMPLES / "ppm.opt").read_text().replace("tol=1e-4", "tol=1e-8")
    line = next(i for i, s in enumerate(text.splitlines(), 1) if "solver" in s)
    with pytest.warns(optgen.OptgenWarning, match="solver tol=1e-08 of network Ppm is below"):
        outputs = optgen.compile_source(text, "ppm.opt")
    assert "module = make_module(torch.float64)" in outputs["test_ppm.py"]
    for name, source in outputs.items():
        (tmp_path / name).write_text(source)
    assert_generated_tests_pass(tmp_path, tmp_path)
    result = run_optgen("check", str(opt_file(text, "ppm.opt")))
    assert result.returncode == 0
    assert f"ppm.opt:{line}:5: warning: solver tol=1e-08" in result.stderr
    # The catalog's tolerances (1e-4) are within float32's reach: no warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error", optgen.OptgenWarning)
        optgen.compile_source((EXAMPLES / "ppm.opt").read_text(), "ppm.opt")


# ---------------------------------------------------------------- optgen.load and pickling
def test_loaded_classes_pickle_and_torch_save_across_processes(tmp_path, monkeypatch):
    import io
    import pickle

    monkeypatch.setenv("OPTGEN_CACHE", str(tmp_path / "cache"))
    HeavyBall = optgen.load(EXAMPLES / "heavy_ball.opt")["HeavyBall"]
    torch.manual_seed(0)
    module = HeavyBall(8, depth=2)
    x = torch.randn(3, 8)
    clone = pickle.loads(pickle.dumps(module))
    torch.testing.assert_close(clone(x), module(x))
    saved = tmp_path / "model.pt"
    torch.save(module, saved)
    buffer = io.BytesIO()
    torch.save(module, buffer)
    buffer.seek(0)
    assert type(torch.load(buffer, weights_only=False)) is HeavyBall
    # A fresh process loads the same source, then the saved module.
    script = (
        "import sys, torch, optgen\n"
        f"optgen.load({str(EXAMPLES / 'heavy_ball.opt')!r})\n"
        f"m = torch.load({str(saved)!r}, weights_only=False)\n"
        "print(type(m).__name__, m.depth)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and out.stdout.strip() == "HeavyBall 2", out.stderr


def test_loads_takes_the_text_and_reuses_the_package_of_the_same_source(tmp_path, monkeypatch):
    monkeypatch.setenv("OPTGEN_CACHE", str(tmp_path / "cache"))
    first = optgen.loads(HEAVY_BALL, "heavy_ball.opt")["HeavyBall"]
    again = optgen.loads(HEAVY_BALL, "heavy_ball.opt")["HeavyBall"]
    assert first is again
    changed = optgen.loads(HEAVY_BALL.replace("layers 16", "layers 5"), "heavy_ball.opt")
    assert changed["HeavyBall"] is not first and changed["HeavyBall"](4).depth == 5
    packages = sorted(p.name for p in (tmp_path / "cache").glob("modules-*/optgen_*"))
    assert len(packages) == 2 and not any(p.startswith(".") for p in packages)
    with pytest.raises(TypeError):
        optgen.loads(b"network A {}")


# ---------------------------------------------------------------- run-time settings
def _ppm():
    module = load_generated("ppm")
    torch.manual_seed(0)
    return getattr(module, module.__all__[0])(4, depth=2)


@pytest.mark.parametrize(
    "attr, value, message",
    [
        ("solver", {"name": "anderzon", "tol": 1e-4}, "unknown name 'anderzon'; choose one of"),
        (
            "solver",
            {"name": "anderson", "max_iter": 0, "tol": 1e-4},
            "option max_iter must be a positive int",
        ),
        ("solver", {"name": "fixed_point", "tolerance": 1e-4}, "has no option 'tolerance'"),
        ("backward", {"name": "phantm"}, "unknown name 'phantm'"),
    ],
)
def test_a_misspelled_run_time_setting_is_a_clear_error(attr, value, message):
    module = _ppm()
    setattr(module, attr, value)
    with pytest.raises(ValueError, match=message):
        module(torch.randn(2, 4))


@pytest.mark.parametrize("depth", [0, -1, 2.0, True])
def test_a_depth_that_is_not_a_positive_int_is_refused(depth):
    module = load_generated("heavy_ball")
    with pytest.raises(ValueError, match="depth must be a positive int"):
        getattr(module, module.__all__[0])(4, depth=depth)


def test_implicit_modules_take_an_empty_batch_and_half_precision():
    module = _ppm()
    assert module(torch.randn(0, 4)).shape == (0, 4)
    with torch.autocast("cpu", dtype=torch.float16):
        out = module(torch.randn(3, 4))
    assert torch.isfinite(out.float()).all()


def test_the_runtime_knows_every_option_of_the_registry():
    from optgen.kinds.blocks import BACKWARD_KINDS, SOLVER_KINDS

    namespace: dict = {"nn": torch.nn, "torch": torch}
    runtime = (EXAMPLES.parent / "templates" / "runtime" / "solvers.py").read_text()
    exec(
        compile("from torch import Tensor\nimport warnings\n" + runtime, "solvers", "exec"),
        namespace,
    )
    for name, kind in SOLVER_KINDS.items():
        assert set(kind.options) <= set(namespace["_SOLVER_OPTIONS"][name])
    for name, kind in BACKWARD_KINDS.items():
        if kind.explicit_only:  # backward reversible: explicit modules, no solver runtime
            assert name not in namespace["_BACKWARD_OPTIONS"]
            continue
        assert set(kind.options) <= set(namespace["_BACKWARD_OPTIONS"][name])


def test_a_custom_block_must_name_an_nn_module_subclass():
    text = """
network Risky {
    state x
    param t = 0.5
    block T = custom("pydoc:pipepager", universal=no)
    update { x+ = x - t*T(x) }
}
"""
    namespace: dict = {}
    source = optgen.compile_source(text, "risky.opt")["risky.py"]
    exec(compile(source, "risky.py", "exec"), namespace)
    with pytest.raises(TypeError, match="must name an nn.Module subclass, got function"):
        namespace["Risky"](4)
    fine = text.replace("pydoc:pipepager", "torch.nn:Identity")
    exec(compile(optgen.compile_source(fine, "r.opt")["risky.py"], "r", "exec"), namespace)
    assert namespace["Risky"](4)(torch.ones(2, 4)).shape == (2, 4)


def test_bidi_controls_in_a_file_name_are_escaped_in_the_header_and_docstring(tmp_path):
    name = "evil\u202egnp.opt"
    source = optgen.compile_source(HEAVY_BALL, name)["heavy_ball.py"]
    assert "\u202e" not in source
    assert "from evil\\u202egnp.opt. Do not edit" in source
    namespace: dict = {}
    exec(compile(source, "heavy_ball.py", "exec"), namespace)  # still valid Python
