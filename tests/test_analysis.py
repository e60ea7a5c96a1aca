"""The convergence and universality certificate (analysis.md), on rules written as .opt text."""

from __future__ import annotations

import json

import numpy
import pytest

from optgen.analysis import analyze
from optgen.analysis.certificate import analyze_network
from optgen.resolve import resolve
from optgen.source import SourceFile
from optgen.syntax.parse import parse

CONTRACT_KEYS = {
    "name", "explicit", "states", "blocks", "depth", "rho", "roots", "spectral_radius", "zero_stable",
    "consistent", "step", "per_layer", "amplification", "conditions", "universal", "diagnostics",
}  # fmt: skip


def networks(text: str):
    src = SourceFile("test.opt", text)
    return resolve(parse(src), src)


def cert(text: str):
    (net,) = networks(text)
    return analyze(net)


def gd(t="0.1", block="mlp(hidden=2*dim)"):
    return f"network Gd {{ state x; param t = {t}; block T = {block}; layers 4; update {{ x+ = x - t*T(x) }} }}"


def heavy_ball(beta, t="0.1", extra=""):
    return (
        f"network Hb {{ state x; param beta = {beta}{extra}; param t = {t}; block T = mlp(hidden=2*dim); layers 4\n"
        "update { x+ = x - t*T(x) + beta*(x - x-) } }"
    )


def nesterov(beta, t="0.1", layers=4):
    return (
        f"network Nv {{ state x, y; init y = x; param t = {t}; param beta = {beta}\n"
        f"block T = mlp(hidden=2*dim); layers {layers}\n"
        "update {\n x+ = y - t*T(y)\n y = x+ + beta*(x+ - x)\n}\noutput x }"
    )


PPM = "network Ppm { state x; param t = 0.1; block T = mlp(hidden=dim); layers 4; update { x+ = x - t*T(x+) } }"


def roots_of(c):
    return sorted(
        (complex(re, im) for re, im in c.as_dict()["roots"]), key=lambda z: (-abs(z), -z.real)
    )


# ---------------------------------------------------------------- the worked table of analysis.md section 2
@pytest.mark.parametrize(
    "text, rho, roots, step, explicit",
    [
        (gd(), [-1, 1], [1], 0.1, True),
        (heavy_ball("0.9"), [0.9, -1.9, 1], [1, 0.9], 1.0, True),
        (nesterov("0.9"), [0.9, -1.9, 1], [1, 0.9], 1.0, True),
        (PPM, [-1, 1], [1], 0.1, False),
    ],
    ids=["gd", "heavy_ball", "nesterov", "proximal_point"],
)
def test_worked_table(text, rho, roots, step, explicit):
    c = cert(text).as_dict()
    assert c["rho"] == pytest.approx(rho)
    assert roots_of(cert(text)) == pytest.approx(roots)
    assert c["zero_stable"] is True
    assert c["consistent"] is True
    assert c["step"] == pytest.approx(step)
    assert c["explicit"] is explicit
    assert c["universal"]["guaranteed"] is True


def test_heavy_ball_is_a_classical_lmm_with_sigma():
    c = cert(heavy_ball("0.9")).as_dict()
    assert c["sigma"] == {"T": pytest.approx([0.0, 0.1, 0.0])}  # sigma(z) = t z
    assert c["sigma"]["T"][1] / (2 - 1.9) == pytest.approx(c["step"])  # h = sigma(1) / rho'(1)


def test_degree_counts_every_lag_and_keeps_zero_roots():
    ab2 = "network Ab { state x; param t = 0.1; block T = mlp(hidden=dim); update { x+ = x - t*(1.5*T(x) - 0.5*T(x-)) } }"
    assert cert(ab2).as_dict()["rho"] == pytest.approx([0, -1, 1])  # z^2 - z
    neg = (
        "network Ng { state x; param t = 0.1; block T = mlp(hidden=dim); update { x+ = -t*T(x) } }"
    )
    c = cert(neg).as_dict()
    assert c["rho"] == pytest.approx([0, 1])  # z
    assert c["consistent"] is False and "rho(1) = 1" in c["consistency"]


# ---------------------------------------------------------------- boundary values of beta
@pytest.mark.parametrize("rule", [heavy_ball, nesterov], ids=["heavy_ball", "nesterov"])
def test_beta_one_is_a_double_root(rule):
    c = cert(rule("1"))
    d = c.as_dict()
    assert d["zero_stable"] is False and d["consistent"] is False
    assert roots_of(c) == pytest.approx([1, 1])
    assert "root 1 of rho is a double root on the unit circle" in d["zero_stability"]
    assert d["universal"]["guaranteed"] is False


@pytest.mark.parametrize("rule", [heavy_ball, nesterov], ids=["heavy_ball", "nesterov"])
def test_beta_above_one_names_the_root_outside(rule):
    c = cert(rule("1.2"))
    d = c.as_dict()
    assert d["zero_stable"] is False
    assert d["zero_stability"] == "root 1.2 of rho lies outside the unit circle"
    assert d["consistent"] is False and d["step"] == pytest.approx(-0.5)  # h = t/(1 - beta) < 0
    assert d["spectral_radius"] == pytest.approx(1.2)
    span, message = c.failures()[0]
    assert "root 1.2 of rho lies outside the unit circle" in message and span.line >= 1
    assert d["diagnostics"][0]["severity"] == "warning"
    assert "root 1.2" in d["diagnostics"][0]["message"]


@pytest.mark.parametrize("rule", [heavy_ball, nesterov], ids=["heavy_ball", "nesterov"])
def test_beta_minus_one_is_zero_stable(rule):
    c = cert(rule("-1"))
    d = c.as_dict()
    assert roots_of(c) == pytest.approx([1, -1])
    assert d["zero_stable"] is True and d["consistent"] is True
    assert d["step"] == pytest.approx(0.05)
    assert c.failures() == []


def _holds(condition: str, beta: float) -> bool:
    return bool(eval(condition, {}, {"beta": beta}))  # e.g. "-1 <= beta < 1"


@pytest.mark.parametrize("rule", [heavy_ball, nesterov], ids=["heavy_ball", "nesterov"])
def test_symbolic_condition_is_minus_one_to_one(rule):
    (condition,) = cert(rule("0.9")).as_dict()["conditions"]
    assert condition == "-1 <= beta < 1"
    for beta in numpy.linspace(-3, 3, 121):
        assert _holds(condition, beta) == (-1 <= beta < 1)
    for beta in ["-1.5", "-1", "-0.5", "0", "0.99", "1", "1.01"]:
        assert _holds(condition, float(beta)) == cert(rule(beta)).zero_stable, beta


def test_condition_printed_when_the_value_lies_outside():
    assert cert(heavy_ball("1.2")).as_dict()["conditions"] == ["-1 <= beta < 1"]
    assert cert(gd()).as_dict()["conditions"] == []


# ---------------------------------------------------------------- k-dependent and learnable coefficients
def test_nesterov_with_beta_k_has_one_radius_per_layer():
    d = cert(nesterov("k/(k+3)", layers=12)).as_dict()
    assert len(d["per_layer"]) == 12
    assert all(r == pytest.approx(1.0) for r in d["per_layer"])
    assert (
        d["amplification"] is not None
        and numpy.isfinite(d["amplification"])
        and d["amplification"] >= 1
    )
    assert d["zero_stable"] is True and d["consistent"] is True
    assert d["rho"] == pytest.approx([0, -1, 1])  # layer 0: beta_0 = 0
    assert d["per_layer_step"] == pytest.approx(
        [0.1 * (k + 3) / 3 for k in range(12)]
    )  # t/(1 - beta_k)
    assert any("as k -> infinity" in n and "double root" in n for n in d["notes"])
    assert d["conditions"] == ["-1 <= beta < 1"]


def test_constant_rules_have_no_per_layer_figures():
    d = cert(nesterov("0.9")).as_dict()
    assert d["per_layer"] is None and d["amplification"] is None


def test_learnable_beta_in_range_is_stable_for_every_trained_value():
    c = cert(heavy_ball("0.5", extra=" learnable in [0, 1)"))
    notes = " ".join(c.as_dict()["notes"])
    assert "waived for learnable steps" in notes
    assert "zero-stable for every trained value" in notes


def test_learnable_beta_outside_is_waived_not_a_failure():
    c = cert(heavy_ball("1.2", extra=" learnable"))
    d = c.as_dict()
    assert d["zero_stable"] is False
    assert d["universal"]["guaranteed"] is True
    assert any("waived" in r for r in d["universal"]["reasons"])
    assert c.failures() == []


def test_learnable_step_does_not_waive_a_fixed_momentum():
    text = heavy_ball("1.2", t="0.1 learnable positive")
    c = cert(text)
    assert c.as_dict()["universal"]["guaranteed"] is False
    assert any("outside the unit circle" in m for _, m in c.failures())


# ---------------------------------------------------------------- multi-state: linearized ADMM
LADMM = """
network Ladmm {
    state x, z, lam
    init z = x
    init lam = 0
    param t = 0.5
    param rho = 0.5
    block F = mlp(hidden=2*dim)
    block G = mlp(hidden=2*dim)
    layers 16
    update {
        x+ = x - t*(F(x) + lam + rho*(x - z))
        z+ = z - t*(G(z) - lam - rho*(x+ - z))
        lam+ = lam + rho*(x+ - z+)
    }
    output x
}
"""


def ladmm_step(s, t=0.5, rho=0.5, f=0.0, g=0.0):
    """The LADMM update written by hand, blocks replaced by the constants f and g."""
    x, z, lam = s
    x1 = x - t * (f + lam + rho * (x - z))
    z1 = z - t * (g - lam - rho * (x1 - z))
    return numpy.array([x1, z1, lam + rho * (x1 - z1)])


def test_ladmm_spectrum_matches_the_update_applied_to_basis_vectors():
    d = cert(LADMM).as_dict()
    matrix = numpy.column_stack([ladmm_step(e) for e in numpy.eye(3)])
    expected = numpy.linalg.eigvals(matrix)
    got = [complex(re, im) for re, im in d["roots"]]
    assert sorted(got, key=lambda z: (z.real, z.imag)) == pytest.approx(
        sorted(expected, key=lambda z: (z.real, z.imag))
    )
    assert numpy.array(d["matrix"], dtype=float) == pytest.approx(matrix)
    assert d["rho"] == pytest.approx(numpy.poly(matrix)[::-1])
    assert d["zero_stable"] is True and d["consistent"] is True
    assert d["conditions"] == ["0 < rho*t < 2"]


def test_ladmm_steps_match_the_drift_under_constant_blocks():
    """With F = G = 1 the output drifts by -(h_F + h_G) per layer once the transient is gone."""
    d = cert(LADMM).as_dict()
    s = numpy.zeros(3)
    for _ in range(400):
        previous, s = s, ladmm_step(s, f=1.0, g=1.0)
    drift = s[0] - previous[0]
    assert drift == pytest.approx(-(d["steps"]["F"] + d["steps"]["G"]), rel=1e-9)


# ---------------------------------------------------------------- history sums and implicit rules
def test_dense_rule_is_differenced_into_gradient_descent():
    text = """network Dense { state x; param t = 0.5; block T = mlp(hidden=2*dim); layers 6
    update { g = T(x); x+ = x[0] - t*sum(i = 0..k, g[i]) } }"""
    d = cert(text).as_dict()
    assert d["rho"] == pytest.approx([-1, 1])
    assert d["step"] == pytest.approx(0.5)
    assert d["universal"]["guaranteed"] is True
    assert any("differenced" in n for n in d["notes"])


def test_implicit_two_block_rule():
    text = "network Pgd { state x; param t = 0.25; block F = mlp(hidden=dim); block G = mlp(hidden=dim); update { x+ = x - t*F(x) - t*G(x+) } }"
    d = cert(text).as_dict()
    assert d["explicit"] is False
    assert d["steps"] == {"F": pytest.approx(0.25), "G": pytest.approx(0.25)}
    assert d["sigma"] == {"F": pytest.approx([0.25, 0]), "G": pytest.approx([0, 0.25])}


# ---------------------------------------------------------------- universality verdicts
def test_linear_block_is_not_guaranteed():
    d = cert(gd(block="linear()")).as_dict()
    assert d["zero_stable"] is True and d["consistent"] is True
    assert d["universal"]["guaranteed"] is False
    assert any("no two-layer substructure" in r for r in d["universal"]["reasons"])


def test_identity_activation_is_not_guaranteed():
    d = cert(gd(block="mlp(hidden=dim, act=identity)")).as_dict()
    assert d["universal"]["guaranteed"] is False


def test_custom_block_is_unknown():
    d = cert(gd(block='custom("pkg.mod:Block")')).as_dict()
    assert d["universal"]["guaranteed"] is None


@pytest.mark.parametrize(
    "wrap", ["relu(x - t*T(x))", "softshrink(x - t*T(x), 0.1)"], ids=["relu", "softshrink"]
)
def test_fixed_maps_lie_outside_the_theory(wrap):
    c = cert(
        f"network Px {{ state x; param t = 0.1; block T = mlp(hidden=dim); update {{ x+ = {wrap} }} }}"
    )
    d = c.as_dict()
    assert d["universal"]["guaranteed"] is None
    assert "outside the theory" in d["universal"]["reasons"][0]
    assert d["zero_stable"] is None and d["rho"] is None and d["roots"] is None
    assert c.failures() == []
    assert "outside the theory" in c.summary()


# ---------------------------------------------------------------- the JSON contract and the text outputs
def test_as_dict_holds_the_contract_and_is_plain_json():
    for text in [gd(), heavy_ball("1.2"), nesterov("k/(k+3)"), LADMM, PPM]:
        d = cert(text).as_dict()
        assert CONTRACT_KEYS <= set(d)
        assert set(d["universal"]) == {"guaranteed", "reasons"}
        assert json.loads(json.dumps(d, allow_nan=False)) == d


def test_analysis_is_deterministic():
    (a,) = networks(LADMM)
    (b,) = networks(LADMM)
    assert json.dumps(analyze_network(a).as_dict()) == json.dumps(analyze_network(b).as_dict())
    assert analyze(a) is analyze(a)


def test_summary_and_text():
    c = cert(nesterov("0.9", t="1.0"))
    assert (
        c.summary()
        == "Nv: explicit, rho = z^2 - 1.9z + 0.9, zero-stable, consistent, h = 10, universal: guaranteed"
    )
    text = c.render_text()
    for piece in [
        "rho(z) = z^2 - 1.9z + 0.9",
        "conditions: -1 <= beta < 1",
        "universal: guaranteed",
        "zero-stable: yes",
    ]:
        assert piece in text


def test_failures_point_at_the_deciding_fixed_param():
    (net,) = networks(heavy_ball("1.2"))
    beta = next(p for p in net.params if p.name == "beta")
    c = analyze(net)
    assert [span for span, _ in c.failures()] == [beta.span, beta.span]
    assert [(d.span, d.message) for d in c.diagnostics] == [
        (beta.span, "network Hb is not zero-stable: root 1.2 of rho lies outside the unit circle"),
        (
            beta.span,
            "network Hb is not consistent: the step h = -0.5 of block T is not positive: "
            "the rule integrates the ODE backward in time",
        ),
    ]
    assert [(d["line"], d["col"]) for d in c.as_dict()["diagnostics"]] == [
        (beta.span.line, beta.span.col)
    ] * 2


def test_failures_without_a_deciding_param_point_at_the_update():
    (net,) = networks(
        "network Two { state x; block T = mlp(hidden=dim); update { x+ = 2*x - x- - 0.1*T(x) } }"
    )
    c = analyze(net)
    update = net.statements[0].span
    assert [span for span, _ in c.failures()] == [update, update]


def test_waived_warning_stays_at_the_update():
    (net,) = networks(heavy_ball("1.2", extra=" learnable"))
    c = analyze(net)
    assert c.failures() == []
    assert [d.span for d in c.diagnostics] == [net.statements[0].span] * 2


def test_summary_and_text_come_from_the_presenter():
    from optgen import present

    c = cert(LADMM)
    assert c.render_text() == present.check_text(c)
    assert c.summary() == present.summary_line(c)


def test_analysis_imports_no_torch_jinja_or_black():
    from pathlib import Path

    import optgen.analysis

    for path in Path(optgen.analysis.__file__).parent.glob("*.py"):
        source = path.read_text()
        for name in ("torch", "jinja2", "black"):
            assert f"import {name}" not in source and f"from {name}" not in source, (
                path.name,
                name,
            )


def test_a_simple_root_1_is_strictly_stable():
    # sympy's Float(0.0) == 0 is False: the imaginary part of root 1 was read as nonzero,
    # and every limit k -> infinity was noted "a root other than 1 reaches the unit circle".
    import sympy

    from optgen.analysis import stability

    half = sympy.Rational(1, 2)
    for rho in ((-1, 1), (half, -1 - half, 1)):  # z - 1 and (z - 1)(z - 1/2)
        roots = stability.exact_roots(tuple(sympy.sympify(c) for c in rho))
        assert stability.strictly_stable(roots), rho
    double = stability.exact_roots((sympy.Integer(1), sympy.Integer(-2), sympy.Integer(1)))
    assert not stability.strictly_stable(double)
    step = "network G {\n state x\n param t = 0.5/(k + 1)\n block T = mlp()\n"
    step += " update { x+ = x - t*T(x) }\n}\n"
    import optgen

    (cert,) = optgen.check_source(step, "g.opt")
    assert not any("as k -> infinity" in note for note in cert["notes"]), cert["notes"]
