"""Schedules (language.md section 11): sqrt, exp, log, min, max, `^` and recursion on k."""

import math

import pytest
import sympy

import optgen
from optgen import schedules
from tests.conftest import load_generated, run_optgen


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path, monkeypatch):
    """`optgen.loads` writes its packages here: never a stale one of an older optgen."""
    monkeypatch.setenv("OPTGEN_CACHE", str(tmp_path / "cache"))


def network(params: str, update: str = "x+ = x - t*T(x)", layers: int = 6, name: str = "A"):
    return f"""network {name} {{
    state x
{params}
    block T = mlp(hidden=dim)
    layers {layers}
    update {{
        {update}
    }}
}}
"""


def classes(text: str) -> dict:
    return optgen.loads(text, "rule.opt")


def fista_sequence(count: int) -> list[float]:
    values = [1.0]
    while len(values) < count:
        values.append((1 + math.sqrt(1 + 4 * values[-1] ** 2)) / 2)
    return values


# ---------------------------------------------------------------- scalar functions and ^
@pytest.mark.parametrize(
    "value, expected",
    [
        ("sqrt(2)/10", math.sqrt(2) / 10),
        ("exp(-1)", math.exp(-1)),
        ("log(2)", math.log(2)),
        ("min(0.3, 0.2, 0.5)", 0.2),
        ("max(0.3, 1/4)", 0.3),
        ("2^-2", 0.25),
        ("-2^2 + 5", 1.0),  # -(2^2): ^ binds tighter than unary minus
        ("2^3^2/1000", 0.512),  # right-associative: 2^(3^2)
        ("4^(1/2)/10", 0.2),
        ("(1/8)^(1/3)", 0.5),
    ],
)
def test_constant_params_take_scalar_functions_and_powers(value, expected):
    cls = classes(network(f"    param t = {value}"))["A"]
    assert cls(4).fixed_params["t"] == pytest.approx(expected, rel=1e-12)


def test_k_dependent_schedule_with_functions_is_a_table_of_the_module():
    text = network("    param t = min(1/sqrt(k+1), 0.9) * exp(-k/10) + log(k+1)^2/100")
    cls = classes(text)["A"]
    expected = [
        min(1 / math.sqrt(k + 1), 0.9) * math.exp(-k / 10) + math.log(k + 1) ** 2 / 100
        for k in range(6)
    ]
    assert cls(4).fixed_params["t"] == pytest.approx(expected, rel=1e-12)
    deeper = cls(4, depth=9).fixed_params["t"]
    assert len(deeper) == 9
    assert deeper[8] == pytest.approx(
        min(1 / 3, 0.9) * math.exp(-0.8) + math.log(9) ** 2 / 100, rel=1e-12
    )


def test_scalar_functions_in_an_update_coefficient():
    cls = classes(network("    param t = 0.25", "x+ = x - sqrt(t)*T(x)"))["A"]
    torch = pytest.importorskip("torch")
    module = cls(3).double()
    x = torch.randn(2, 3, dtype=torch.float64)
    expected = x
    for k in range(6):
        expected = expected - 0.5 * module.blocks["T"][k](expected)
    torch.testing.assert_close(module(x), expected, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- recursive schedules
FISTA_PARAMS = """    param t = 0.5
    param tk[0] = 1
    param tk[k+1] = (1 + sqrt(1 + 4*tk^2))/2"""


def test_the_fista_sequence_in_the_generated_module_for_the_declared_depth():
    fista = load_generated("fista")
    module = fista.Fista(4)
    assert module.fixed_params["tk"] == pytest.approx(fista_sequence(16), rel=1e-15)
    # The module-level table holds optgen's values for every layer read (tk[k+1] at k = 15).
    assert len(fista._FISTA_TK_VALUES) == 17
    assert fista._FISTA_TK_VALUES == pytest.approx(fista_sequence(17), rel=1e-15)


def test_the_values_at_compile_time_are_exact_or_fifty_digits():
    result = optgen.api.frontend(network(FISTA_PARAMS, "x+ = x - t*tk*T(x)"), "rule.opt")
    tk = result.networks[0].param("tk").value
    assert abs(tk.func.rule.value(1) - (1 + sympy.sqrt(5)) / 2).evalf(80) < 1e-45
    rational = optgen.api.frontend(
        network("    param a[0] = 1\n    param a[k+1] = a/2 + 1", "x+ = x - a*T(x)"), "r.opt"
    )
    a = rational.networks[0].param("a").value.func.rule
    assert [a.value(n) for n in range(4)] == [
        1,
        sympy.Rational(3, 2),
        sympy.Rational(7, 4),
        sympy.Rational(15, 8),
    ]


def test_a_deeper_constructor_continues_the_recursion_in_float64():
    fista = load_generated("fista")
    module = fista.Fista(4, depth=40)
    assert module.fixed_params["tk"] == pytest.approx(fista_sequence(40), rel=1e-13)
    expected = fista_sequence(41)
    coefficients = [(expected[k] - 1) / expected[k + 1] for k in range(40)]
    # (1 - tk)/tk[k+1] is the weight of x in y = lerp(x+, x, ...)
    assert [-c for c in module.coef] == pytest.approx(coefficients, rel=1e-13)


def test_the_generated_module_computes_its_extra_entries_without_optgen(tmp_path):
    """The continuation is plain Python in the generated file: no import of optgen."""
    source = load_generated("fista").__file__
    text = open(source).read()
    assert "optgen" not in "".join(
        line for line in text.splitlines() if line.startswith(("import", "from"))
    )
    assert "def _fista_tk(count: int) -> list[float]:" in text


def test_a_model_stage_starting_later_reads_the_schedule_from_its_start():
    fista = load_generated("fista")
    module = fista.Fista(4, depth=3, start=20)
    assert module.fixed_params["tk"] == pytest.approx(fista_sequence(23)[20:], rel=1e-13)


def test_a_param_built_on_a_recursive_schedule():
    text = network(
        FISTA_PARAMS + "\n    param beta = (tk - 1)/tk[k+1]",
        "x+ = x - t*T(x) + beta*(x - x-)",
    )
    cls = classes(text)["A"]
    seq = fista_sequence(7)
    assert cls(4).fixed_params["beta"] == pytest.approx(
        [(seq[k] - 1) / seq[k + 1] for k in range(6)], rel=1e-13
    )


def test_the_certificate_checks_fista_layer_by_layer():
    (cert,) = optgen.check_source(open("examples/fista.opt").read(), "fista.opt")
    assert cert["zero_stable"] is True and cert["consistent"] is True
    assert len(cert["per_layer"]) == 16
    assert cert["per_layer"] == pytest.approx([1.0] * 16)
    assert "tk[k + 1]" in cert["rho_text"]
    assert any("recursive schedule" in note for note in cert["notes"])
    assert cert["universal"]["guaranteed"] is True
    # The FISTA momentum (tk - 1)/tk[k+1] grows towards 1, so the products of M_k grow.
    assert cert["amplification"] > 1


def test_a_schedule_constraint_is_checked_at_every_layer():
    text = network(
        "    param tk[0] = 0.5\n    param tk[k+1] = tk + 0.1 in (0, 1)", "x+ = x - tk*T(x)"
    )
    with pytest.raises(optgen.OptgenError) as info:
        classes(text)
    assert "at layer k=5 violates its constraint 0 < tk < 1" in str(info.value)


def test_a_schedule_can_be_read_at_a_fixed_layer():
    text = network(FISTA_PARAMS, "x+ = x - t*tk[3]/tk*T(x)")
    module = classes(text)["A"](4)
    seq = fista_sequence(7)
    assert [-0.5 * seq[3] / seq[k] for k in range(6)] == pytest.approx(module.coef, rel=1e-13)


# ---------------------------------------------------------------- located errors
ERRORS = {
    "forward_reference": (
        "    param tk[0] = 1\n    param tk[k+1] = tk[k+2]",
        "x+ = x - tk*T(x)",
        (4, 21),
        "the recursion of tk refers forward: 'tk[k+2]' is not known when tk[k+1] is computed",
    ),
    "self_reference_ahead": (
        "    param tk[0] = 1\n    param tk[k+1] = tk[k+1] + 1",
        "x+ = x - tk*T(x)",
        (4, 21),
        "the recursion of tk refers forward: 'tk[k+1]' is not known when tk[k+1] is computed",
    ),
    "missing_start": (
        "    param tk[k+1] = tk + 1",
        "x+ = x - tk*T(x)",
        (3, 5),
        "schedule tk has a recursion but no start value",
    ),
    "missing_recursion": (
        "    param tk[0] = 1",
        "x+ = x - tk*T(x)",
        (3, 5),
        "schedule tk has a start value but no recursion",
    ),
    "start_twice": (
        "    param tk[0] = 1\n    param tk[0] = 2\n    param tk[k+1] = tk + 1",
        "x+ = x - tk*T(x)",
        (4, 5),
        "the start value of schedule tk is given twice",
    ),
    "recursion_twice": (
        "    param tk[0] = 1\n    param tk[k+1] = tk + 1\n    param tk[k+1] = tk + 2",
        "x+ = x - tk*T(x)",
        (5, 5),
        "the recursion of schedule tk is given twice",
    ),
    "bad_equation_index": (
        "    param tk[2] = 1",
        "x+ = x - tk*T(x)",
        (3, 14),
        "a schedule is defined by tk[0] = ... and tk[k+1] = ..., not tk[2]",
    ),
    "log_of_zero": (
        "    param t = log(0)",
        "x+ = x - t*T(x)",
        (3, 15),
        "'log(0)' is not a finite number",
    ),
    "sqrt_of_negative": (
        "    param t = sqrt(-1)",
        "x+ = x - t*T(x)",
        (3, 15),
        "'sqrt(-1)' is not a real number",
    ),
    "log_at_layer_zero": (
        "    param t = log(k)",
        "x+ = x - t*T(x)",
        (3, 15),
        "param t is undefined at layer k=0 (division by zero or overflow)",
    ),
    "recursion_overflows": (
        "    param tk[0] = 2\n    param tk[k+1] = tk^2",
        "x+ = x - tk*T(x)",
        (4, 21),
        "schedule tk[10] overflows a float64 (above 1e307) within the declared depth (16 layers)",
    ),
    "recursion_not_real": (
        "    param tk[0] = 0.5\n    param tk[k+1] = log(tk)",
        "x+ = x - tk*T(x)",
        (4, 21),
        "schedule tk[2] is not a finite real number within the declared depth (16 layers)",
    ),
    "power_of_a_tensor": (
        "    param t = 0.1",
        "x+ = x - t*x^2",
        (7, 20),
        "'^' takes scalars, but the base of 'x^2' is a tensor",
    ),
    "tensor_exponent": (
        "    param t = 0.1",
        "x+ = x - 2^x*T(x)",
        (7, 18),
        "'^' takes scalars, but the exponent of '2^x' is a tensor",
    ),
    "sqrt_of_a_tensor": (
        "    param t = 0.1",
        "x+ = x - t*sqrt(x)",
        (7, 25),
        "sqrt takes scalars, but 'x' is a tensor",
    ),
    "sqrt_two_arguments": (
        "    param t = sqrt(1, 2)",
        "x+ = x - t*T(x)",
        (3, 15),
        "sqrt takes 1 argument, got 2",
    ),
    "min_one_argument": (
        "    param t = min(1)",
        "x+ = x - t*T(x)",
        (3, 15),
        "min takes at least 2 arguments, got 1",
    ),
    "learnable_recursion": (
        "    param tk[0] = 1\n    param tk[k+1] = tk + 1 learnable",
        "x+ = x - tk*T(x)",
        (4, 28),
        "schedule tk is defined by a recursion, so it is fixed: 'learnable' does not apply",
    ),
    "recursion_reads_too_deep_a_lag": (
        "    param tk[0] = 1\n    param tk[k+1] = tk[k-65]",
        "x+ = x - tk*T(x)",
        (4, 24),
        "lag -65 is too deep",
    ),
    "sqrt_of_learnable": (
        "    param t = 0.1 learnable positive",
        "x+ = x - sqrt(t)*T(x)",
        (7, 23),
        "sqrt of a learnable param is not supported: its argument must be fixed",
    ),
    "power_tower": (
        "    param t = 2^2^2^2^2^2",
        "x+ = x - t*T(x)",
        (3, 17),
        "'2^2^2^2^2' is about 1e19728, outside the range of a float64",
    ),
    "constructor_name": (
        "    param start[0] = 1\n    param start[k+1] = start + 1",
        "x+ = x - start*T(x)",
        (4, 11),
        "'start' cannot name a recursive schedule: the generated constructor holds its "
        "values in a variable of that name, which it already uses",
    ),
    "exp_overflows": (
        "    param t = exp(1000)",
        "x+ = x - t*T(x)",
        (3, 15),
        "'exp(1000)' overflows a float64",
    ),
}


def error_text(name: str) -> str:
    params, update, _, _ = ERRORS[name]
    return network(params, update, layers=16)


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_each_schedule_error_is_located(name):
    _, _, (line, col), message = ERRORS[name]
    with pytest.raises(optgen.OptgenError) as info:
        optgen.compile_source(error_text(name), "rule.opt")
    (diagnostic,) = info.value.diagnostics
    assert (diagnostic["line"], diagnostic["col"], diagnostic["message"]) == (line, col, message)


def test_the_cli_prints_every_schedule_error_and_writes_nothing(tmp_path):
    """One file holding every mistake, one network each: exit 1, file:line:col, no file."""
    texts, expected, offset = [], [], 0
    for index, name in enumerate(sorted(ERRORS)):
        text = error_text(name).replace("network A", f"network A{index}")
        _, _, (line, col), message = ERRORS[name]
        expected.append(f"{tmp_path / 'rule.opt'}:{line + offset}:{col}: error: {message}")
        texts.append(text)
        offset += text.count("\n")
    source = tmp_path / "rule.opt"
    source.write_text("".join(texts))
    out = tmp_path / "out"
    out.mkdir()
    result = run_optgen("compile", str(source), "-o", str(out))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    printed = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert printed == expected
    assert list(out.iterdir()) == []


def test_the_printer_writes_math_functions_for_the_module():
    k = sympy.Symbol("k")
    assert schedules.python_code(sympy.sqrt(k + 1) + sympy.exp(k) + sympy.log(k + 2)) == (
        "math.sqrt(k + 1) + math.exp(k) + math.log(k + 2)"
    )
    assert schedules.python_code(sympy.Min(k, 2)) == "min(2, k)"


def test_a_learnable_per_layer_param_can_start_at_a_recursive_schedule():
    text = network(
        "    param tk[0] = 1\n    param tk[k+1] = tk + 1\n"
        "    param s = 1/tk learnable per_layer positive",
        "x+ = x - s*T(x)",
        layers=4,
    )
    cls = classes(text)["A"]
    assert cls(3).double().params()["s"].tolist() == pytest.approx([1, 1 / 2, 1 / 3, 1 / 4])
    assert cls(3, depth=6).double().params()["s"].tolist() == pytest.approx(
        [1, 1 / 2, 1 / 3, 1 / 4, 1 / 5, 1 / 6]
    )


def test_the_certificate_reads_irrational_params_and_function_schedules_exactly():
    heavy = network(
        "    param t = 0.1\n    param beta = sqrt(2)/2", "x+ = x - t*T(x) + beta*(x - x-)"
    )
    (cert,) = optgen.check_source(heavy, "h.opt")
    assert cert["zero_stable"] is True and cert["consistent"] is True
    assert cert["step"] == pytest.approx(0.1 / (1 - math.sqrt(2) / 2), rel=1e-10)
    assert cert["conditions"] == ["-1 <= beta < 1"]
    scheduled = network(
        "    param t = 1/sqrt(k+1)\n    param beta = min(0.9, k/(k+1))",
        "x+ = x - t*T(x) + beta*(x - x-)",
    )
    (cert,) = optgen.check_source(scheduled, "g.opt")
    steps = [1 / math.sqrt(k + 1) / (1 - min(0.9, k / (k + 1))) for k in range(6)]
    assert cert["per_layer_step"] == pytest.approx(steps, rel=1e-10)
