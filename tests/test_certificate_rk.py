"""Multistage rules read as one-step Runge-Kutta methods (issue 14, point 6)."""

import json
import warnings

import pytest
from conftest import EXAMPLES, load_generated, run_optgen

import optgen
from optgen.errors import OptgenWarning

EXTRAGRADIENT = """
network Eg {
    state x
    param t = 0.5
    block T = mlp(hidden=2*dim, act=relu)
    layers 4
    update {
        xh = x - t*T(x)
        x+ = x - t*T(xh)
    }
}
"""

HEUN = """
network Heun {
    state x
    param t = 0.25
    block T = mlp(hidden=2*dim, act=relu)
    layers 4
    update {
        g = T(x)
        xh = x - t*g
        x+ = x - t/2*(g + T(xh))
    }
}
"""

# Explicit Douglas-Rachford: each resolvent J_tF(v) ~ v - t*F(v) written as a forward step.
DOUGLAS_RACHFORD = """
network Dr {
    state z
    param t = 0.5
    block F = mlp(hidden=2*dim, act=relu)
    block G = mlp(hidden=2*dim, act=relu)
    layers 4
    update {
        x = z - t*F(z)
        y = 2*x - z - t*G(2*x - z)
        z+ = z + y - x
    }
}
"""

RK4 = """
network Rk4 {
    state x
    param t = 0.5
    block T = mlp(hidden=2*dim, act=relu)
    layers 4
    update {
        k1 = T(x)
        k2 = T(x - t/2*k1)
        k3 = T(x - t/2*k2)
        k4 = T(x - t*k3)
        x+ = x - t/6*(k1 + 2*k2 + 2*k3 + k4)
    }
}
"""


def cert(text: str) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptgenWarning)
        (c,) = optgen.check_source(text)
    return c


def test_extragradient_is_a_consistent_two_stage_method_of_order_one():
    c = cert(EXTRAGRADIENT)
    rk = c["runge_kutta"]
    assert rk["A"] == [[0.0, 0.0], [1.0, 0.0]]
    assert rk["b"] == [0.0, 1.0]
    assert rk["c"] == [0.0, 1.0]
    assert rk["order"] == 1
    assert rk["stages"] == ["T(x)", "T(x - 0.5*K1)"]
    assert c["rho"] == [-1.0, 1.0] and c["roots"] == [[1.0, 0.0]]
    assert c["zero_stable"] is True and c["consistent"] is True
    assert c["step"] == 0.5
    assert c["universal"]["guaranteed"] is True
    assert any(
        "one-step Runge-Kutta method, consistent (order 1)" in r for r in c["universal"]["reasons"]
    )
    json.dumps(c)  # JSON-able


def test_heun_is_order_two():
    c = cert(HEUN)
    rk = c["runge_kutta"]
    assert rk["A"] == [[0.0, 0.0], [1.0, 0.0]]
    assert rk["b"] == [0.5, 0.5]
    assert rk["order"] == 2
    assert c["step"] == 0.25
    assert c["universal"]["guaranteed"] is True
    assert any("consistent (order 2)" in r for r in c["universal"]["reasons"])


def test_explicit_douglas_rachford_is_an_additive_method_with_a_step_per_block():
    c = cert(DOUGLAS_RACHFORD)
    rk = c["runge_kutta"]
    assert rk["blocks"] == ["F", "G"]
    assert rk["A"] == [[0.0, 0.0], [2.0, 0.0]]  # G is evaluated at z - 2t F(z)
    assert rk["b"] == [1.0, 1.0]  # each block's weights sum to 1
    assert rk["order"] == 1
    assert c["steps"] == {"F": 0.5, "G": 0.5} and c["step"] == 0.5
    assert c["consistent"] is True and c["universal"]["guaranteed"] is True


def test_classical_rk4_has_order_four():
    rk = cert(RK4)["runge_kutta"]
    assert rk["c"] == [0.0, 0.5, 0.5, 1.0]
    assert rk["order"] == 4 and rk["max_order_checked"] == 4


def test_inconsistent_weights_stay_unknown_with_a_located_warning():
    text = EXTRAGRADIENT.replace("x+ = x - t*T(xh)", "x+ = x - t*T(xh) + t*T(x)")
    c = cert(text)
    assert c["consistent"] is False
    assert c["runge_kutta"]["order"] is None
    assert c["universal"]["guaranteed"] is None
    assert any("no convergence argument applies" in r for r in c["universal"]["reasons"])
    assert any("not consistent" in d["message"] for d in c["diagnostics"])


def test_a_stage_that_scales_the_iterate_is_not_read():
    text = EXTRAGRADIENT.replace("xh = x - t*T(x)", "xh = 2*x - t*T(x)")
    c = cert(text)
    assert c["runge_kutta"] is None
    assert c["universal"]["guaranteed"] is None
    assert "not a one-step Runge-Kutta method" in c["universal"]["reasons"][0]


def test_a_multistep_and_multistage_mixture_stays_outside_the_theory():
    text = EXTRAGRADIENT.replace("x+ = x - t*T(xh)", "x+ = x - t*T(xh) + 0.5*(x - x-)")
    c = cert(text)
    assert c["runge_kutta"] is None and c["rho"] is None
    assert c["universal"]["guaranteed"] is None
    assert "reads x-" in c["universal"]["reasons"][0]


def test_learnable_step_waives_an_inconsistent_rule():
    text = EXTRAGRADIENT.replace("param t = 0.5", "param t = 0.5 learnable").replace(
        "x+ = x - t*T(xh)", "x+ = x - t*T(xh) + t*T(x)"
    )
    c = cert(text)
    assert c["consistent"] is False and c["universal"]["guaranteed"] is True
    assert any("waived" in r for r in c["universal"]["reasons"])


def test_linear_multistep_rules_have_no_tableau():
    c = optgen.check_source((EXAMPLES / "heavy_ball.opt").read_text())[0]
    assert c["runge_kutta"] is None


def test_check_prints_the_tableau_and_strict_fails_an_inconsistent_rule(tmp_path):
    good = tmp_path / "heun.opt"
    good.write_text(HEUN)
    result = run_optgen("check", str(good))
    assert result.returncode == 0, result.stderr
    assert "one-step Runge-Kutta method, 2 stage(s), order 2" in result.stdout
    assert "b = [0.5, 0.5]" in result.stdout
    bad = tmp_path / "bad.opt"
    bad.write_text(EXTRAGRADIENT.replace("x+ = x - t*T(xh)", "x+ = x - t*T(xh) + t*T(x)"))
    result = run_optgen("check", str(bad), "--strict")
    assert result.returncode == 1
    assert "bad.opt:4:5: error: network Eg is not consistent" in result.stderr


@pytest.mark.parametrize("stem, order", [("extragradient", 1)])
def test_the_generated_module_carries_the_tableau(stem, order):
    module = load_generated(stem)
    rk = module.EXTRAGRADIENT_CERTIFICATE["runge_kutta"]
    assert rk["order"] == order
    assert module.Extragradient.CERTIFICATE["runge_kutta"] == rk
    assert "one-step Runge-Kutta method: 2 stages, order 1" in module.Extragradient.__doc__


def test_the_catalog_table_gives_the_order():
    result = run_optgen("check", str(EXAMPLES / "extragradient.opt"), "--markdown")
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if line.startswith("| Extragradient"))
    assert "| yes (RK order 1) |" in row
