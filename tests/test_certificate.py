"""The certificate through the command line and in the generated modules (issue 4)."""

import json
import math
import re

import pytest
import torch
from conftest import EXAMPLES, GENERATED, load_generated, run_optgen

import optgen

CATALOG = sorted(str(p) for p in EXAMPLES.glob("*.opt"))


def check_json(*files: str) -> dict:
    result = run_optgen("check", *files, "--json")
    assert result.returncode == 0, result.stderr
    return {c["name"]: c for c in json.loads(result.stdout)}


def test_worked_table_of_the_design_from_check_json_on_the_catalog():
    certs = check_json(
        *(str(EXAMPLES / f"{n}.opt") for n in ("gd", "heavy_ball", "nesterov", "ppm"))
    )
    # rule: (roots, zero_stable, consistent, step); heavy ball t=0.5, beta=0.5; Nesterov t=1, beta=0.9; ppm t=0.5
    table = {
        "GD": ([[1.0, 0.0]], True, True, 1.0),
        "HeavyBall": ([[1.0, 0.0], [0.5, 0.0]], True, True, 0.5 / (1 - 0.5)),
        "Nesterov": ([[1.0, 0.0], [0.9, 0.0]], True, True, 1.0 / (1 - 0.9)),
        "Ppm": ([[1.0, 0.0]], True, True, 0.5),
    }
    for name, (roots, zero_stable, consistent, step) in table.items():
        c = certs[name]
        assert [pytest.approx(r) for r in sorted(roots)] == sorted(c["roots"]), name
        assert (c["zero_stable"], c["consistent"]) == (zero_stable, consistent), name
        assert c["step"] == pytest.approx(step), name
    assert certs["GD"]["rho"] == [-1.0, 1.0]
    assert certs["HeavyBall"]["rho"] == [0.5, -1.5, 1.0]
    assert certs["Ppm"]["explicit"] is False


def test_json_holds_every_contract_key_for_every_catalog_network():
    keys = {
        "name",
        "explicit",
        "states",
        "blocks",
        "depth",
        "rho",
        "roots",
        "spectral_radius",
        "zero_stable",
        "consistent",
        "step",
        "per_layer",
        "amplification",
        "conditions",
        "universal",
        "diagnostics",
    }
    certs = check_json(*CATALOG)
    assert len(certs) == len(CATALOG)
    for c in certs.values():
        assert keys <= set(c), c["name"]
        assert set(c["universal"]) >= {"guaranteed", "reasons"}


def test_nesterov_k_has_one_radius_per_layer_and_a_finite_amplification():
    c = check_json(str(EXAMPLES / "nesterov_k.opt"))["NesterovK"]
    assert len(c["per_layer"]) == c["depth"] == 16
    assert math.isfinite(c["amplification"]) and c["amplification"] >= 1


class ZeroBlock(torch.nn.Module):
    def forward(self, v):
        return torch.zeros_like(v)


def generated_ladmm_step(x, z, lam):
    """One layer of the generated LADMM module with zero blocks, from arbitrary states.

    The loop body and the named constants before it (t = 0.5, rho = 0.5) are taken
    verbatim from generated/ladmm.py; only the initialisation (z = x, lam = 0) is
    replaced by the given states.
    """
    source = (GENERATED / "ladmm.py").read_text()
    forward = source[source.index("    def forward(self, x: Tensor)") :]
    constants = re.findall(r"^        \w+ = -?[0-9.]+$", forward, flags=re.MULTILINE)
    assert constants, "no named constants in the generated forward"
    body = (
        "\n".join(constants)
        + "\n"
        + forward[
            forward.index("        for k in range(self.depth):") : forward.index("        return x")
        ]
    )
    code = "def step(self, x, z, lam):\n" + "\n".join(line[4:] for line in body.splitlines())
    code += "\n    return x, z, lam\n"
    namespace = {"torch": torch}
    exec(compile(code, "ladmm_step", "exec"), namespace)
    module = load_generated("ladmm").LADMM(1, depth=1)
    module.blocks["F"][0] = ZeroBlock()
    module.blocks["G"][0] = ZeroBlock()
    return namespace["step"](module, x, z, lam)


def test_ladmm_spectrum_matches_the_generated_update_applied_to_basis_vectors():
    columns = []
    for basis in torch.eye(3, dtype=torch.float64):
        x, z, lam = (basis[i].reshape(1, 1).clone() for i in range(3))
        columns.append(torch.cat([v.reshape(1) for v in generated_ladmm_step(x, z, lam)]))
    matrix = torch.stack(columns, dim=1)
    eig = torch.linalg.eigvals(matrix)
    c = check_json(str(EXAMPLES / "ladmm.opt"))["LADMM"]
    ours = sorted((round(re, 9), round(im, 9)) for re, im in c["roots"])
    theirs = sorted((round(v.real.item(), 9), round(v.imag.item(), 9)) for v in eig)
    assert ours == theirs
    assert c["spectral_radius"] == pytest.approx(eig.abs().max().item())
    # rho is the characteristic polynomial of that matrix (monic, lowest degree first).
    poly = torch.tensor(c["rho"], dtype=torch.float64)
    for root in eig:
        value = sum(coef * root**i for i, coef in enumerate(poly))
        assert abs(value) < 1e-9


HB = """network Hb {{
    state x
    param t = 0.5
    param beta = {beta}
    block T = {block}
    layers 4
    update {{
        x+ = x - t*T(x) + beta*(x - x-)
    }}
}}
"""


def test_strict_fails_exactly_on_non_convergent_rules(opt_file, tmp_path):
    assert run_optgen("check", *CATALOG, "--strict").returncode == 0
    out = tmp_path / "out"
    assert run_optgen("compile", *CATALOG, "--strict", "-o", str(out)).returncode == 0
    bad = opt_file(HB.format(beta="1.2", block="mlp(hidden=2*dim)"), "hb.opt")
    for command in (
        ["check", str(bad), "--strict"],
        ["compile", str(bad), "--strict", "-o", str(tmp_path / "bad")],
    ):
        result = run_optgen(*command)
        assert result.returncode == 1, command
        assert (
            f"{bad}:4:5: error: network Hb is not zero-stable: root 1.2 of rho lies outside the unit circle"
            in result.stderr
        )
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "bad").exists()
    # Without --strict it is a warning, and the module is still written.
    result = run_optgen("compile", str(bad), "-o", str(tmp_path / "warned"))
    assert result.returncode == 0 and ": warning: network Hb is not zero-stable" in result.stderr
    assert (tmp_path / "warned" / "hb.py").exists()


def test_check_warns_at_the_param_that_decides(opt_file):
    bad = opt_file(HB.format(beta="1.2", block="mlp(hidden=2*dim)"), "hb.opt")
    result = run_optgen("check", str(bad))
    assert result.returncode == 0, result.stderr
    # Both checks are decided by rho, where beta enters (the step h = t/(1 - beta) holds
    # t too, but beta is what makes it negative). The hint says what --strict does.
    hint = "hint: --strict makes this an error\n"
    assert result.stderr == (
        f"{bad}:4:5: warning: network Hb is not zero-stable: root 1.2 of rho lies outside the unit circle\n"
        "    param beta = 1.2\n"
        "    ^~~~~~~~~~~~~~~~\n"
        + hint
        + f"{bad}:4:5: warning: network Hb is not consistent: the step h = -2.5 of block T is not positive: "
        "the rule integrates the ODE backward in time\n"
        "    param beta = 1.2\n"
        "    ^~~~~~~~~~~~~~~~\n" + hint
    )
    (c,) = optgen.check_source(bad.read_text(), "hb.opt")
    assert [(d["severity"], d["line"], d["col"]) for d in c["diagnostics"]] == [
        ("warning", 4, 5),
        ("warning", 4, 5),
    ]
    assert all(type(d["severity"]) is str for d in c["diagnostics"])


TWO = """network Two {
    state x
    block T = mlp(hidden=dim)
    update {
        x+ = 2*x - x- - 0.1*T(x)
    }
}
"""


def test_check_warns_at_the_update_when_no_param_decides(opt_file):
    bad = opt_file(TWO, "two.opt")
    result = run_optgen("check", str(bad))
    assert result.returncode == 0, result.stderr
    caret = "        ^~~~~~~~~~~~~~~~~~~~~~~~\n"
    hint = "hint: --strict makes this an error\n"
    assert result.stderr == (
        f"{bad}:5:9: warning: network Two is not zero-stable: root 1 of rho is a double root on the unit circle\n"
        "        x+ = 2*x - x- - 0.1*T(x)\n"
        + caret
        + hint
        + f"{bad}:5:9: warning: network Two is not consistent: root 1 of rho "
        "is a double root (rho'(1) = 0), so the step h = sigma(1)/rho'(1) is undefined\n"
        "        x+ = 2*x - x- - 0.1*T(x)\n" + caret + hint
    )
    strict = run_optgen("check", str(bad), "--strict")
    assert strict.returncode == 1
    assert f"{bad}:5:9: error: network Two is not zero-stable:" in strict.stderr


@pytest.mark.parametrize(
    "beta, block, guaranteed, reason",
    [
        ("0.5", "mlp(hidden=2*dim)", True, "convergent: zero-stable and consistent"),
        ("0.5", "linear()", False, "linear() has no two-layer substructure"),
        (
            "1.2",
            "mlp(hidden=2*dim)",
            False,
            "not zero-stable: root 1.2 of rho lies outside the unit circle",
        ),
    ],
)
def test_universality_verdict_and_reason(opt_file, beta, block, guaranteed, reason):
    (c,) = optgen.check_source(HB.format(beta=beta, block=block), "hb.opt")
    assert c["universal"]["guaranteed"] is guaranteed
    assert any(reason in r for r in c["universal"]["reasons"]), c["universal"]["reasons"]


def test_rule_outside_the_theory_is_null_with_its_reason():
    text = "network Ista {\n state x\n block T = mlp()\n update { x+ = softshrink(x - 0.5*T(x), 0.1) }\n}\n"
    (c,) = optgen.check_source(text, "ista.opt")
    assert c["universal"]["guaranteed"] is None
    assert any("outside the theory" in r for r in c["universal"]["reasons"])


def test_generated_modules_carry_the_certificate_of_check():
    for path in CATALOG:
        for c in optgen.check_source(open(path).read(), path):
            stem = [
                p.stem
                for p in GENERATED.glob("*.py")
                if not p.stem.startswith("test_") and f"class {c['name']}(" in p.read_text()
            ][0]
            cls = getattr(load_generated(stem), c["name"])
            assert cls.CERTIFICATE == json.loads(json.dumps(c))
            assert "universal approximation:" in cls.__doc__ and "rho(z) =" in cls.__doc__


def test_compile_prints_one_summary_line_per_network(tmp_path):
    result = run_optgen(
        "compile", str(EXAMPLES / "nesterov.opt"), str(EXAMPLES / "ladmm.opt"), "-o", str(tmp_path)
    )
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert (
        lines[0].startswith("Nesterov: ")
        and "zero-stable yes, consistent yes, universal guaranteed" in lines[0]
    )
