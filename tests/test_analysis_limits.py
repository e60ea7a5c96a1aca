"""The analysis' limits are said (a note and a warning) and were moved (issue 14, point 7).

Before: no symbolic conditions above 6 slots or above two roots besides 0 and 1, and no
certificate at all past 24 slots.
"""

import warnings

import numpy
import pytest
import sympy
from conftest import run_optgen

import optgen
from optgen.analysis import certificate, stability, symbolic
from optgen.errors import OptgenWarning


def lagged(name: str, lag: int, beta: str = "param beta = 0.3", gamma: str = "0.2") -> str:
    """Heavy ball plus a term gamma*(x[k-lag+1] - x[k-lag]): rho has degree lag + 1."""
    return f"""
network {name} {{
    state x
    param t = 0.5
    {beta}
    block T = mlp(hidden=2*dim, act=relu)
    layers 4
    update {{ x+ = x - t*T(x) + beta*(x - x-) + {gamma}*(x[k-{lag - 1}] - x[k-{lag}]) }}
}}
"""


def cert(text: str) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptgenWarning)
        (c,) = optgen.check_source(text)
    return c


def limit_notes(c: dict) -> list[str]:
    return [n for n in c["notes"] if n.startswith("limit: ")]


def zero_stable_numerically(beta: float, lag: int, gamma: float = 0.2) -> bool:
    """rho(z) = z^(lag+1) - (1+beta) z^lag + beta z^(lag-1) - gamma z + gamma, by numpy."""
    coeffs = numpy.zeros(lag + 2)
    coeffs[0], coeffs[1], coeffs[2] = 1, -(1 + beta), beta
    coeffs[-2] += -gamma
    coeffs[-1] += gamma
    roots = numpy.roots(coeffs)
    others = numpy.delete(roots, numpy.argmin(abs(roots - 1)))  # the simple root 1
    return bool(numpy.all(abs(others) < 1 - 1e-9))


@pytest.mark.parametrize("lag, region", [(3, (-1.2, 0.8)), (12, (-0.8, 0.8))])
def test_three_lags_and_more_than_six_slots_get_exact_conditions(lag, region):
    c = cert(lagged(f"Lag{lag}", lag))
    lo, hi = region
    assert c["conditions"] == [f"{lo:g} <= beta < {hi:g}"]
    assert limit_notes(c) == [] and c["diagnostics"] == []
    for beta in numpy.linspace(lo - 0.3, hi + 0.3, 13):
        if abs(beta - lo) > 1e-6 and abs(beta - hi) > 1e-6:
            assert zero_stable_numerically(beta, lag) == (lo < beta < hi), beta


@pytest.mark.parametrize(
    "remainder, expected",
    [
        # roots: cube roots of beta; all on the circle at beta = -1 (simple: stable), and
        # at beta = 1 root 1 is double
        (lambda z, b: z**3 - b, "-1 <= beta < 1"),
        # z^4 + beta z^2 + 1/2: at beta = 1.5 the roots +-i are simple on the circle, at
        # beta = -1.5 the root 1 of the remainder makes root 1 double
        (lambda z, b: z**4 + b * z**2 + sympy.Rational(1, 2), "-1.5 < beta <= 1.5"),
    ],
)
def test_the_closed_disc_is_exact_at_the_boundary(remainder, expected):
    z, beta = symbolic.Z, sympy.Symbol("p_beta", real=True)
    rho = tuple(reversed(sympy.Poly(sympy.expand((z - 1) * remainder(z, beta)), z).all_coeffs()))
    assert symbolic.stability_conditions(rho) == ([expected], None)


def test_four_states_get_conditions():
    text = """
network Four {
    state x, y, u, v
    init { y = x; u = x; v = x }
    param t = 0.5
    param beta = 0.3
    block T = mlp(hidden=2*dim, act=relu)
    layers 4
    update {
        x+ = y - t*T(y)
        y = x+ + beta*(x+ - x)
        u = u + 0.5*(x+ - u)
        v = v + 0.5*(u - v)
    }
    output x
}
"""
    c = cert(text)
    assert len(c["slots"]) == 4
    assert c["conditions"] == ["-1 <= beta < 1"]


def test_past_24_slots_the_certificate_is_derived():
    c = cert(lagged("Lag30", 30, beta="", gamma="0.2").replace("beta*", "0.3*"))
    assert len(c["slots"]) == 31
    assert c["zero_stable"] is True and c["consistent"] is True
    assert c["conditions"] == []  # no fixed param enters rho
    assert c["universal"]["guaranteed"] is True


def test_float_roots_of_a_high_degree_factor_are_a_note_and_a_warning(tmp_path):
    text = lagged("Lag40", 40, beta="", gamma="0.2").replace("beta*", "0.3*")
    c = cert(text)
    (note,) = limit_notes(c)
    assert f"above {stability.EXACT_ROOT_DEGREE}" in note and "float64" in note
    assert c["zero_stable"] is True
    (warning,) = c["diagnostics"]
    assert warning["severity"] == "warning" and warning["line"] == 8
    path = tmp_path / "lag40.opt"
    path.write_text(text)
    result = run_optgen("check", str(path))
    assert result.returncode == 0
    assert "lag40.opt:8:14: warning: network Lag40: rho has a square-free factor" in result.stderr


def test_a_schur_cohn_reduction_past_its_bound_is_a_note_and_a_warning():
    c = cert(
        lagged("TwoParams", 12, gamma="gamma").replace("block T", "param gamma = 0.2\n    block T")
    )
    assert c["conditions"] is None
    (note,) = limit_notes(c)
    assert f"past the bound of {symbolic.MAX_CONDITION_OPS}" in note
    assert any("Schur-Cohn" in d["message"] for d in c["diagnostics"])


def test_two_params_get_strict_conditions_and_say_so():
    c = cert(
        lagged("TwoParams3", 3, gamma="gamma").replace("block T", "param gamma = 0.2\n    block T")
    )
    assert c["conditions"] and all("beta" in x or "gamma" in x for x in c["conditions"])
    (note,) = limit_notes(c)
    assert "strictly inside the unit circle" in note


def test_the_slot_limit_is_a_note_and_a_warning(monkeypatch):
    monkeypatch.setattr(certificate, "MAX_EXACT_SLOTS", 3)
    c = cert(lagged("Lag4", 4))
    assert c["rho"] is None and c["universal"]["guaranteed"] is None
    (note,) = limit_notes(c)
    assert "the exact analysis stops at 3" in note
    assert c["diagnostics"][0]["severity"] == "warning"


def test_the_symbolic_slot_limit_is_a_note_and_a_warning(monkeypatch):
    monkeypatch.setattr(certificate, "MAX_SYMBOLIC_SLOTS", 2)
    c = cert(lagged("Lag3b", 3))
    assert c["conditions"] is None and c["zero_stable"] is True
    (note,) = limit_notes(c)
    assert "symbolic conditions are derived up to 2 slots" in note
    assert len(c["diagnostics"]) == 1


def test_layers_past_the_exact_ones_are_a_note_and_a_warning(monkeypatch):
    monkeypatch.setattr(certificate, "EXACT_LAYERS", 3)
    text = """
network NkDeep {
    state x
    param t = 0.5
    param beta = k/(k+3)
    block T = mlp(hidden=2*dim, act=relu)
    layers 6
    update { x+ = x - t*T(x) + beta*(x - x-) }
}
"""
    c = cert(text)
    (note,) = limit_notes(c)
    assert "layers k >= 3 are checked in floating point" in note
    assert len(c["per_layer"]) == 6
    assert any("floating point" in d["message"] for d in c["diagnostics"])


@pytest.mark.parametrize(
    "root, stable",
    [
        (sympy.sqrt(2) / 2, True),  # a double root inside the circle
        (sympy.sqrt(2) / 2 + sympy.I * sympy.sqrt(2) / 2, False),  # a double root on it
    ],
)
def test_a_multiple_root_at_an_irrational_cut_value_is_decided(root, stable):
    # mpmath's 50-digit roots do not converge on a multiple root: float64 roots decide
    z, beta = symbolic.Z, sympy.Symbol("p_beta", real=True)
    poly = (z - 1) * ((z - root) * (z - sympy.conjugate(root))) ** 2
    coeffs = tuple(reversed(sympy.Poly(sympy.expand(poly), z).all_coeffs()))
    assert symbolic._root_condition_at(coeffs, beta, sympy.sqrt(2) / 2) is stable
