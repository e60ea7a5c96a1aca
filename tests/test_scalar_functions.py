"""Scalar functions of k in schedules and coefficients (issue 27, point 1): cos, sin, floor,
ceil, abs, `%` on integers and the constant pi, beside sqrt, exp, log, min and max.

Each rule is checked against something independent of the code writer: the param values
against the formula computed here with `math`, and the module against the reference
interpreter (`optgen.reference`, which evaluates coefficients with sympy, not with the
printed Python)."""

import math

import pytest
import torch
from conftest import run_optgen
from test_reference import assert_agrees, build, sample_input

import optgen
from optgen import api

COSINE = """
network CosineGd {
    state x
    param t = 0.5*(1 + cos(pi*k/8))
    param r = 0.1 - (k % 3)/20 + floor(k/4)/100 + ceil(k/5)/1000 + abs(sin(pi*k/3))/7
    block T = mlp(hidden=2*dim)
    layers 8
    update {
        x+ = x - t*T(x) - r*T(x)/2 - (2 - (k % 2))*cos(pi/7)*T(x)/50
    }
    output x
}
"""


def expected_t(k: int) -> float:
    return 0.5 * (1 + math.cos(math.pi * k / 8))


def expected_r(k: int) -> float:
    return (
        0.1
        - (k % 3) / 20
        + math.floor(k / 4) / 100
        + math.ceil(k / 5) / 1000
        + abs(math.sin(math.pi * k / 3)) / 7
    )


@pytest.fixture(scope="module")
def cosine():
    classes = optgen.loads(COSINE, "cosine.opt")
    network = api.frontend(COSINE, "cosine.opt").networks[0]
    return network, classes["CosineGd"]


def test_schedules_of_the_new_functions_follow_their_formulas(cosine):
    _, cls = cosine
    values = cls(4).double().params()
    assert values["t"].tolist() == pytest.approx([expected_t(k) for k in range(8)], abs=1e-15)
    assert values["r"].tolist() == pytest.approx([expected_r(k) for k in range(8)], abs=1e-15)


def test_the_module_agrees_with_the_reference(cosine):
    network, cls = cosine
    module = build(network, cls, seed=3, depth=8)
    assert_agrees(network, module, sample_input(network, seed=3))


def test_a_negated_remainder_is_printed_as_python_reads_it():
    # sympy's printers write -Mod(k, 3)/20 as `-k % 3/20`, which Python reads as
    # ((-k) % 3)/20: 2/20 at k = 1 instead of -1/20.
    from optgen.schedules import python_code

    k = optgen.ir.K
    code = python_code(-sympy_mod(k, 3) / 20)
    assert [eval(code, {"k": i}) for i in range(4)] == [0.0, -0.05, -0.1, 0.0]


def sympy_mod(a, b):
    import sympy

    return sympy.Mod(a, b)


def test_the_certificate_is_exact_per_layer():
    (cert,) = optgen.check_source(COSINE, "cosine.opt")
    assert cert["zero_stable"] is True and cert["consistent"] is True


RULE = """network N {
    state x
    param t = 1 learnable
    block T = mlp(hidden=dim)
    layers 4
    update {
        x+ = x - STEP*T(x)
    }
    output x
}
"""
ERRORS = {
    "(x % 2)": ("7:19", "'%' takes integers, but the left side of 'x % 2' is a tensor"),
    "(k/2 % 3)": ("7:19", "'%' takes integers, but 'k/2' is not one"),
    "(k % 0)": ("7:23", "remainder of a division by zero"),
    "(t % 2)": ("7:19", "'%' takes integers, but 't' is not one"),
    "cos(x)": ("7:22", "cos takes scalars, but 'x' is a tensor"),
    "floor(k, 2)": ("7:18", "floor takes 1 argument, got 2"),
    "cosh(k)": ("7:18", "unknown function 'cosh'"),
}


@pytest.mark.parametrize("step", sorted(ERRORS))
def test_a_bad_use_is_a_located_error_and_nothing_is_written(tmp_path, step):
    where, message = ERRORS[step]
    source = tmp_path / "bad.opt"
    source.write_text(RULE.replace("STEP", step))
    out = tmp_path / "out"
    done = run_optgen("compile", str(source), "-o", str(out))
    assert done.returncode == 1
    assert f"bad.opt:{where}: error: {message}" in done.stderr
    assert not out.exists()


def test_pi_is_a_word_of_the_language(tmp_path):
    source = tmp_path / "pi.opt"
    source.write_text(RULE.replace("param t = 1 learnable", "param pi = 3").replace("STEP", "pi"))
    done = run_optgen("check", str(source))
    assert done.returncode == 1
    assert "pi.opt:3:11: error: 'pi' is a word of the language (the constant pi)" in done.stderr


def test_pi_in_an_update_is_the_constant():
    text = RULE.replace("param t = 1 learnable", "param t = 1").replace("STEP", "pi/4*t")
    cls = optgen.loads(text, "pi.opt")["N"]
    module = cls(3, depth=1).double()
    x = torch.randn(2, 3, dtype=torch.float64)
    expected = x - math.pi / 4 * module.blocks["T"][0](x)
    torch.testing.assert_close(module(x), expected, rtol=1e-14, atol=1e-14)


# -- L, the depth the module is built with -------------------------------------------

ANNEALED = """
network CosineAnnealedGd {
    state x
    param t = 0.5*(1 + cos(pi*k/L))
    block T = mlp(hidden=2*dim)
    layers 8
    update {
        x+ = x - t*T(x) - (1/L)*T(x)/4
    }
    output x
}
"""


@pytest.fixture(scope="module")
def annealed():
    classes = optgen.loads(ANNEALED, "annealed.opt")
    network = api.frontend(ANNEALED, "annealed.opt").networks[0]
    return network, classes["CosineAnnealedGd"]


@pytest.mark.parametrize("depth", [7, 12])
def test_one_compiled_file_anneals_over_the_depth_it_is_built_with(annealed, depth):
    network, cls = annealed
    module = cls(4, depth=depth).double()
    expected = [0.5 * (1 + math.cos(math.pi * k / depth)) for k in range(depth)]
    assert module.params()["t"].tolist() == pytest.approx(expected, abs=1e-15)
    # The module, statement by statement, against a loop written here with those values.
    x = torch.randn(3, 4, dtype=torch.float64)
    state = x
    for k in range(depth):
        T = module.blocks["T"][k]
        state = state - expected[k] * T(state) - T(state) / (4 * depth)
    torch.testing.assert_close(module(x), state, rtol=1e-13, atol=1e-13)
    # And against the reference interpreter, gradients included.
    built = build(network, cls, seed=depth, depth=depth)
    assert_agrees(network, built, sample_input(network, seed=depth))


def test_the_certificate_says_which_depth_it_was_computed_at():
    (cert,) = optgen.check_source(ANNEALED, "annealed.opt")
    assert any("L, the depth, is 8 in this certificate" in note for note in cert["notes"])
    assert cert["zero_stable"] is True and cert["consistent"] is True
    (plain,) = optgen.check_source(COSINE, "cosine.opt")
    assert not any("L, the depth" in note for note in plain["notes"])


def test_a_stage_reads_its_own_depth():
    text = ANNEALED.replace("mlp(hidden=2*dim)", "conv(kernel=3)") + """
model Annealed {
    input [3, 8, 8]
    stem conv(out=8)
    stage CosineAnnealedGd(dim=8, depth=3)
    down conv(out=16) carry output
    stage CosineAnnealedGd(dim=16, depth=5)
    head classifier(classes=4)
}
"""
    cls = optgen.loads(text, "annealed_model.opt")["Annealed"]
    model = cls(num_classes=4).double()
    for stage, depth in zip(model.stages, (3, 5)):
        expected = [0.5 * (1 + math.cos(math.pi * k / depth)) for k in range(depth)]
        assert stage.params()["t"].tolist() == pytest.approx(expected, abs=1e-15)


DEPTH_ERRORS = {
    "recursion": (
        "    param tk[0] = 1\n    param tk[k+1] = tk + 1/L\n",
        "tk*T(x)",
        "5:28: error: the recursion of tk cannot read L, the depth",
    ),
    "recursion_start": (
        "    param tk[0] = 1/L\n    param tk[k+1] = tk/2\n",
        "tk*T(x)",
        "4:21: error: the start value of tk cannot read L, the depth",
    ),
    "recursion_through_a_param": (
        "    param a = 1/L\n    param tk[0] = 1\n    param tk[k+1] = tk + a\n",
        "tk*T(x)",
        "6:21: error: the recursion of tk depends on L, the depth, through a param",
    ),
    "learnable_shared": (
        "    param s = 1/L learnable\n",
        "s*T(x)",
        "4:15: error: learnable param 's' depends on L (the depth) but is shared by all layers",
    ),
    "reserved": (
        "    param L = 2\n",
        "L*T(x)",
        "4:11: error: 'L' is a word of the language (the depth the module is built with)",
    ),
    "sum": (
        "",
        "sum(i = 0..k, x[i]/L)/(k + 1)",
        "7:32: error: the terms of a sum may depend on the index, not on L",
    ),
}


@pytest.mark.parametrize("case", sorted(DEPTH_ERRORS))
def test_a_bad_use_of_the_depth_is_a_located_error(tmp_path, case):
    params, step, message = DEPTH_ERRORS[case]
    text = RULE.replace("    param t = 1 learnable\n", "    param t = 1 learnable\n" + params)
    source = tmp_path / "depth.opt"
    source.write_text(text.replace("STEP*T(x)", step))
    out = tmp_path / "out"
    done = run_optgen("compile", str(source), "-o", str(out))
    assert done.returncode == 1, done.stderr
    assert f"depth.opt:{message}" in done.stderr
    assert not out.exists()


def test_an_equilibrium_has_no_depth(tmp_path):
    source = tmp_path / "eq.opt"
    source.write_text(
        "network E {\n    state z\n    block F = mlp(hidden=dim)\n    layers equilibrium\n"
        "    update {\n        z+ = F(z)/L + input\n    }\n    output z\n}\n"
    )
    done = run_optgen("check", str(source))
    assert done.returncode == 1
    assert "eq.opt:6:9: error: L has no meaning in an equilibrium network" in done.stderr
