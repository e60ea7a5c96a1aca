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
