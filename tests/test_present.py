"""The one presenter of certificates (optgen/present.py): one format for every root, word and flag."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import EXAMPLES, ROOT, run_optgen

from optgen import present
from optgen.analysis import analyze
from optgen.api import compile_source, frontend

CATALOG = sorted(EXAMPLES.glob("*.opt"))


def networks(path: Path):
    return frontend(path.read_text(), str(path)).networks


def certificate(text: str):
    (net,) = frontend(text, "test.opt").networks
    return analyze(net)


def ladmm():
    (net,) = networks(EXAMPLES / "ladmm.opt")
    return net, analyze(net)


# ---------------------------------------------------------------- numbers and roots
def test_root_text_uses_i_and_drops_a_negligible_imaginary_part():
    assert present.root_text(0.5625, 0.496078370825) == "0.5625+0.496078i"
    assert present.root_text(0.5625, -0.496078370825) == "0.5625-0.496078i"
    assert present.root_text(0.5625, 0.496078370825, digits=4) == "0.5625+0.4961i"
    assert present.root_text(-0.0, 1e-13) == "0"
    assert present.root_text(1.2, 0.0) == "1.2"
    assert present.number(-0.0) == "0" and present.number(1 / 3) == "0.333333"
    assert present.yes_no(None) == "unknown" and present.yes_no(None, "?") == "?"
    assert [present.verdict_word(v) for v in (True, False, None)] == [
        "guaranteed",
        "not guaranteed",
        "unknown",
    ]


def test_ladmm_complex_roots_print_alike_in_check_docstring_and_markdown():
    net, cert = ladmm()
    complex_roots = [(re_, im) for re_, im in cert.roots if abs(im) > 1e-12]
    assert len(complex_roots) == 2
    shown = [present.root_text(re_, im) for re_, im in complex_roots]
    assert shown == ["0.5625+0.496078i", "0.5625-0.496078i"]

    text = present.check_text(cert)
    assert (
        "  roots: 1 (|z| = 1), 0.5625+0.496078i (|z| = 0.75), 0.5625-0.496078i (|z| = 0.75);"
        in text
    )
    lines = present.docstring_lines(cert)
    assert lines[0] == (
        "rho(z) = z^3 - 2.125z^2 + 1.6875z - 0.5625; roots: 1, 0.5625+0.496078i, 0.5625-0.496078i"
    )
    table = present.markdown_table([("ladmm.opt", net.name, net.rule, cert)])
    assert "| 1, 0.5625+0.4961i, 0.5625-0.4961i |" in table
    for out in (text, "\n".join(lines), table):
        assert not re.search(r"\dj\b", out), out  # no `0.496078j` anywhere


def test_docstring_lines_of_ladmm():
    _, cert = ladmm()
    assert present.docstring_lines(cert) == [
        "rho(z) = z^3 - 2.125z^2 + 1.6875z - 0.5625; roots: 1, 0.5625+0.496078i, 0.5625-0.496078i",
        "zero-stable: yes; consistent: yes; step h = 0.285714",
        "stable for: 0 < rho*t < 2",
        "universal approximation: guaranteed",
    ]


def test_docstring_lines_outside_the_theory_say_unknown():
    cert = certificate(
        "network Px { state x; param t = 0.1; block T = mlp(hidden=dim); update { x+ = relu(x - t*T(x)) } }"
    )
    assert present.docstring_lines(cert) == [
        "rho(z) = unknown; roots: unknown",
        "zero-stable: unknown; consistent: unknown; step h = unknown",
        "universal approximation: unknown",
    ]


def test_generated_ladmm_docstring_uses_the_presenter():
    net, cert = ladmm()
    path = EXAMPLES / "ladmm.opt"
    module = compile_source(path.read_text(), str(path))["ladmm.py"]
    # The docstring wraps a line past the file's width (88 columns here) onto an indented
    # continuation line: compared with runs of whitespace collapsed.
    flat = " ".join(module.split())
    for line in present.docstring_lines(cert):
        assert f" {line} " in flat, line


# ---------------------------------------------------------------- optgen check
def test_check_text_is_what_optgen_check_prints():
    path = EXAMPLES / "ladmm.opt"
    _, cert = ladmm()
    result = run_optgen("check", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == present.check_text(cert) + "\n"
    assert cert.render_text() == present.check_text(cert)


def test_check_text_of_nesterov():
    cert = certificate(
        "network Nv { state x, y; init y = x; param t = 1.0; param beta = 0.9\n"
        "block T = mlp(hidden=2*dim); layers 4\n"
        "update {\n x+ = y - t*T(y)\n y = x+ + beta*(x+ - x)\n}\noutput x }"
    )
    assert present.check_text(cert) == "\n".join(
        [
            "network Nv: explicit, 4 layers, states x, y",
            "  stacked state s_k = (x, y)",
            "  M = [0, 1; -0.9, 1.9]",
            "  rho(z) = z^2 - 1.9z + 0.9",
            "  roots: 1 (|z| = 1), 0.9 (|z| = 0.9); spectral radius 1",
            "  zero-stable: yes: every root lies in the closed unit disc; on the circle: 1 (simple)",
            "  consistent: yes: rho(1) = 0, rho'(1) != 0 and h = 10 > 0",
            "  step h: T: 10",
            "  conditions: -1 <= beta < 1",
            "  universal: guaranteed",
            "    - block T: mlp holds W2·σ(W1 z + b) with σ = relu",
            "    - convergent: zero-stable and consistent (h = 10)",
        ]
    )


# ---------------------------------------------------------------- optgen compile
GD = "network Gd { state x; param t = 0.1; block T = mlp(hidden=2*dim); layers 4; update { x+ = x - t*T(x) } }"
HB = (
    "network Hb { state x; param beta = 1.2; param t = 0.1; block T = mlp(hidden=2*dim); layers 4\n"
    "update { x+ = x - t*T(x) + beta*(x - x-) } }"
)
RELU = "network Px { state x; param t = 0.1; block T = mlp(hidden=dim); update { x+ = relu(x - t*T(x)) } }"


@pytest.mark.parametrize(
    "text, flags",
    [
        (GD, "zero-stable yes, consistent yes, universal guaranteed"),
        (HB, "zero-stable no, consistent no, universal not guaranteed"),
        (RELU, "zero-stable ?, consistent ?, universal unknown"),
    ],
    ids=["guaranteed", "not-guaranteed", "outside-the-theory"],
)
def test_summary_flags(text, flags):
    assert present.summary_flags(certificate(text)) == flags


def test_summary_flags_are_those_of_the_compile_summary_line(tmp_path):
    files = [EXAMPLES / "gd.opt", EXAMPLES / "deq.opt"]
    result = run_optgen("compile", *map(str, files), "-o", str(tmp_path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    certs = [analyze(net) for path in files for net in networks(path)]
    assert len(lines) == len(certs)
    for line, cert in zip(lines, certs):
        # "16 layers", and "1 layer" (an equilibrium), never "1 layers" (issue 28)
        assert line.endswith(
            f" {present.count(cert.depth, 'layer')}; {present.summary_flags(cert)})"
        ), line


def test_summary_line():
    assert (
        present.summary_line(certificate(GD))
        == "Gd: explicit, rho = z - 1, zero-stable, consistent, h = 0.1, universal: guaranteed"
    )
    assert (
        present.summary_line(certificate(RELU))
        == "Px: explicit, outside the theory, universal: unknown"
    )


# ---------------------------------------------------------------- optgen check --markdown
def test_markdown_table_of_the_catalog_is_docs_catalog():
    # The networks' table, then the models' (examples/models/*.opt, with FLOPs and params).
    paths = CATALOG + sorted((EXAMPLES / "models").glob("*.opt"))
    rows = [
        (path.name, net.name, net.rule, analyze(net)) for path in paths for net in networks(path)
    ]
    catalog = (ROOT / "docs" / "catalog.md").read_text()
    assert catalog.startswith(present.markdown_table(rows))
    assert "| DeepHeavyBall | `staged.opt` |" in catalog


def test_markdown_row_outside_the_theory():
    table = present.markdown_table([("px.opt", "Px", "x+ = relu(x - t*T(x))", certificate(RELU))])
    assert table.splitlines()[-1] == (
        "| Px | `px.opt` | `x+ = relu(x - t*T(x))` | `None` | ? | ? | ? | ? | - | unknown |"
    )


# ---------------------------------------------------------------- no other presenter
PACKAGE = ROOT / "optgen"
SOURCES = sorted(
    [p for p in PACKAGE.rglob("*.py") if p.name != "present.py"]
    + list((ROOT / "templates").rglob("*.j2"))
)
ROOT_FORMAT = re.compile(r"\}[ij][\"']|:\+\.\d*g\}")  # `{...}i"` or `{im:+.4g}`


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_only_present_formats_roots(path):
    hits = [m.group(0) for m in ROOT_FORMAT.finditer(path.read_text(encoding="utf-8"))]
    assert not hits, f"{path.name} formats a complex number itself ({hits}): use present.root_text"
