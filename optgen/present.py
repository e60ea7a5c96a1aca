"""The one presenter of certificates: every text a `Certificate` is shown as.

- `check_text`: the block `optgen check` prints;
- `summary_flags`: the flags of the line `optgen compile` prints per network;
- `docstring_lines`: the certificate in the generated class docstring;
- `markdown_table`: the table of `optgen check --markdown` (docs/catalog.md);
- `summary_line`: one line per network, for Python users (`Certificate.summary()`).

Every function takes the typed `Certificate` (`optgen.analysis.analyze(net)`), never the
JSON dict of `check --json`. Numbers and roots are printed by `number` and `root_text`
only, which the analysis also uses for its messages: a root reads `0.5625+0.496078i`
everywhere, a polynomial `z^2 - 1.9z + 0.9`. The presenter imports nothing of optgen (it
only reads a certificate's fields), so the analysis imports it, for its messages and for
`Certificate.summary()` and `Certificate.render_text()`, without a cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import sympy

from . import schedules

if TYPE_CHECKING:  # annotations only: the presenter reads a certificate's fields
    from .analysis.certificate import Certificate

# ---------------------------------------------------------------- numbers, roots, polynomials
IMAGINARY_ZERO = 1e-12  # |im| below this prints as a real root


def count(n: int, noun: str) -> str:
    """`1 layer`, `4 layers`: a number and its noun, in the singular for one."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def number(x, digits: int = 6) -> str:
    """A short decimal: 1.2, 0.9, -1, 0.333333 (`digits` significant digits, never -0)."""
    text = f"{float(x):.{digits}g}"
    return "0" if text in ("-0", "0") else text


def literal(value) -> str:
    """A number as a Python literal in generated code: `3`, `0.5`, `1e-08` (repr of the
    float round-trips it exactly; an integer stays an integer)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, sympy.Basic) and value.is_integer:
        return str(int(value))
    return repr(float(value))


def float_literal(value) -> str:
    """A number as a Python float literal in generated code: `3.0`, `0.5`, `1e-08`."""
    return repr(float(value))


def root_text(re, im, digits: int = 6) -> str:
    """A root of rho: `0.5` or `0.5625+0.496078i` (the mathematicians' i)."""
    if abs(float(im)) < IMAGINARY_ZERO:
        return number(re, digits)
    sign = "-" if float(im) < 0 else "+"
    return f"{number(re, digits)}{sign}{number(abs(float(im)), digits)}i"


def _plain(expr) -> str:
    expr = sympy.sympify(expr)
    return number(expr) if expr.is_number else schedules.user_str(expr).replace("**", "^")


def _looks_negative(expr: sympy.Expr) -> bool:
    """Whether the numerator's leading coefficient is negative: -(2k + 3)/(k + 3)."""
    numerator, _ = sympy.fraction(sympy.cancel(expr))
    if not numerator.free_symbols:
        return bool(numerator.is_negative)
    try:
        return bool(sympy.Poly(numerator, *sorted(numerator.free_symbols, key=str)).LC() < 0)
    except (sympy.PolynomialError, TypeError):
        return expr.could_extract_minus_sign()


def poly_text(coeffs, var: str = "z", show: Callable[[object], str] = _plain) -> str:
    """`z^2 - 1.9z + 0.9` from coefficients lowest degree first; `show` prints a coefficient
    (the analysis passes one that prints its symbols in the user's names)."""

    def coef_text(coef) -> str:
        shown = show(coef)
        return shown if coef.is_number or coef.is_Symbol else f"({shown})"

    terms = []
    for degree in range(len(coeffs) - 1, -1, -1):
        coef = sympy.sympify(coeffs[degree])
        if coef.is_zero:
            continue
        power = "" if degree == 0 else (var if degree == 1 else f"{var}^{degree}")
        negative = (coef < 0) if coef.is_number else _looks_negative(coef)
        size = sympy.cancel(-coef) if negative else coef
        body = coef_text(size) if (size != 1 or not power) else ""
        terms.append(("-" if negative else "+", body + power))
    if not terms:
        return "0"
    first_sign, first = terms[0]
    text = ("-" if first_sign == "-" else "") + first
    return text + "".join(f" {sign} {body}" for sign, body in terms[1:])


# ---------------------------------------------------------------- words


def yes_no(value: bool | None, unknown: str = "unknown") -> str:
    """`yes`, `no`, or `unknown` (the word for an undecided check)."""
    return unknown if value is None else ("yes" if value else "no")


def verdict_word(value: bool | None) -> str:
    """The universality verdict: guaranteed, not guaranteed or unknown."""
    return {True: "guaranteed", False: "not guaranteed", None: "unknown"}[value]


def _optional(value, digits: int = 6, unknown: str = "?") -> str:
    return unknown if value is None else number(value, digits)


def _roots(cert: Certificate, digits: int = 6, unknown: str = "?") -> str:
    if cert.roots is None:
        return unknown
    return ", ".join(root_text(re, im, digits) for re, im in cert.roots)


# ---------------------------------------------------------------- optgen check
def check_text(cert: Certificate) -> str:
    """The block of `optgen check` for one network."""

    c = cert
    lines = [f"network {c.name}: {c.kind}, {count(c.depth, 'layer')}, states {', '.join(c.states)}"]
    if c.outside_theory:
        lines.append(f"  outside the theory: {c.outside_theory}")
    else:
        lines.append(f"  stacked state s_k = ({', '.join(c.slots)})")
        if len(c.matrix) > 1:
            lines.append("  M = [" + "; ".join(", ".join(row) for row in c.matrix) + "]")
        lines.append(f"  rho(z) = {c.rho_text}")
        for block, coeffs in c.sigma or ():
            lines.append(f"  sigma_{block}(z) = {poly_text(coeffs)}")
        if c.roots is not None:
            shown = ", ".join(
                f"{root_text(re, im)} (|z| = {number(abs(complex(re, im)))})" for re, im in c.roots
            )
            lines.append(f"  roots: {shown}; spectral radius {number(c.spectral_radius)}")
        lines.append(f"  zero-stable: {yes_no(c.zero_stable)}: {c.zero_stability}")
        lines.append(f"  consistent: {yes_no(c.consistent)}: {c.consistency}")
        if c.steps:
            lines.append("  step h: " + ", ".join(f"{b}: {_optional(h)}" for b, h in c.steps))
        if c.conditions is not None:
            shown = "; ".join(c.conditions) if c.conditions else "none (no fixed param enters rho)"
            lines.append(f"  conditions: {shown}")
        if c.runge_kutta is not None:
            lines.extend(runge_kutta_lines(c.runge_kutta))
        if c.per_layer is not None:
            lines.append(f"  per-layer spectral radius: {_layer_list(c.per_layer)}")
            lines.append(
                "  amplification max_k ||M_k ... M_0||: "
                + _optional(c.amplification, unknown="overflows")
            )
    if c.reversible is not None:
        lines.append(
            "  backward reversible: rounding errors grow by at most "
            + _optional(c.reversible["amplification"], unknown="a factor that overflows")
            + " through the reconstruction (blocks neglected)"
        )
    lines.append(f"  universal: {verdict_word(c.universal)}")
    lines.extend(f"    - {r}" for r in c.universal_reasons)
    lines.extend(f"  note: {n}" for n in c.notes)
    return "\n".join(lines)


def runge_kutta_lines(rk) -> list[str]:
    """The Butcher tableau of a multistage rule (`optgen.analysis.runge_kutta.Summary`)."""
    order = "inconsistent" if rk.order is None else f"order {rk.order}"
    if rk.order == rk.max_order_checked:
        order = f"order >= {rk.order} (checked up to {rk.max_order_checked})"
    lines = [f"  one-step Runge-Kutta method, {len(rk.stages)} stage(s), {order}"]
    lines.extend(f"    K{i + 1} = {text}" for i, text in enumerate(rk.stages))
    if rk.A is not None:
        rows = "; ".join(", ".join(number(a) for a in row) for row in rk.A)
        lines.append(f"    A = [{rows}]")
        lines.append(f"    b = [{', '.join(number(x) for x in rk.b)}]")
        lines.append(f"    c = [{', '.join(number(x) for x in rk.c)}]")
    return lines


def _layer_list(values: tuple[float, ...]) -> str:
    """All values for a few layers; first, last, min and max for many."""
    if len(values) <= 20:
        return ", ".join(number(v) for v in values)
    head = ", ".join(number(v) for v in values[:5])
    return (
        f"{head}, ..., {number(values[-1])} "
        f"({len(values)} layers, min {number(min(values))}, max {number(max(values))})"
    )


def summary_line(cert: Certificate) -> str:
    """`Nv: explicit, rho = z^2 - 1.9z + 0.9, zero-stable, consistent, h = 10, universal: guaranteed`."""
    parts = [cert.kind]
    if cert.outside_theory:
        parts.append("outside the theory")
    else:
        parts.append(f"rho = {cert.rho_text}")
        parts.append(_adjective(cert.zero_stable, "zero-stable"))
        parts.append(_adjective(cert.consistent, "consistent"))
        parts.append(f"h = {_optional(cert.step)}")
    parts.append(f"universal: {verdict_word(cert.universal)}")
    return f"{cert.name}: " + ", ".join(parts)


def _adjective(value: bool | None, word: str) -> str:
    """`zero-stable`, `not zero-stable` or `zero-stable?`."""
    return word if value else (f"{word}?" if value is None else f"not {word}")


# ---------------------------------------------------------------- optgen compile
def summary_flags(cert: Certificate) -> str:
    """`zero-stable yes, consistent yes, universal guaranteed` (the compile summary line)."""
    return (
        f"zero-stable {yes_no(cert.zero_stable, '?')}, "
        f"consistent {yes_no(cert.consistent, '?')}, "
        f"universal {verdict_word(cert.universal)}"
    )


# ---------------------------------------------------------------- the generated docstring
def docstring_lines(cert: Certificate) -> list[str]:
    """The certificate in a few lines for the class docstring (CERTIFICATE holds it all).

    Each line is one line of plain text (runs of whitespace collapsed); the caller still
    escapes it for the triple-quoted docstring.
    """
    rho = cert.rho_text or (None if cert.rho is None else list(cert.rho))
    out = [
        f"rho(z) = {'unknown' if rho is None else rho}; roots: {_roots(cert, unknown='unknown')}",
        f"zero-stable: {yes_no(cert.zero_stable)}; consistent: {yes_no(cert.consistent)};"
        f" step h = {_optional(cert.step, unknown='unknown')}",
    ]
    if cert.conditions:
        out.append(f"stable for: {'; '.join(cert.conditions)}")
    if cert.runge_kutta is not None:
        rk = cert.runge_kutta
        order = "inconsistent" if rk.order is None else f"order {rk.order}"
        out.append(f"one-step Runge-Kutta method: {len(rk.stages)} stages, {order}")
    out.append(f"universal approximation: {verdict_word(cert.universal)}")
    return [" ".join(line.split()) for line in out]


# ---------------------------------------------------------------- optgen check --markdown
MARKDOWN_HEADER = (
    "network",
    "file",
    "rule",
    "rho(z)",
    "roots",
    "zero-stable",
    "consistent",
    "h",
    "conditions",
    "universal",
)
MARKDOWN_DIGITS = 4


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _order_note(cert: Certificate) -> str:
    """` (RK order 2)` for a rule read as a Runge-Kutta method, else nothing."""
    rk = cert.runge_kutta
    return "" if rk is None or rk.order is None else f" (RK order {rk.order})"


def markdown_table(rows: list[tuple[str, str, str, Certificate]]) -> str:
    """One row per network: (file name, network name, rule text, certificate)."""
    lines = [
        "<!-- Generated by `optgen check FILE... --markdown`; do not edit: regenerate it. -->",
        "",
        "| " + " | ".join(MARKDOWN_HEADER) + " |",
        "|" + "---|" * len(MARKDOWN_HEADER),
    ]
    for file_name, network_name, rule, cert in rows:
        rho = cert.rho_text or (None if cert.rho is None else list(cert.rho))
        cells = [
            network_name,
            f"`{file_name}`",
            f"`{rule}`",
            f"`{rho}`",
            _roots(cert, MARKDOWN_DIGITS),
            yes_no(cert.zero_stable, "?"),
            yes_no(cert.consistent, "?") + _order_note(cert),
            _optional(cert.step, MARKDOWN_DIGITS),
            "; ".join(f"`{x}`" for x in (cert.conditions or ())) or "-",
            verdict_word(cert.universal),
        ]
        lines.append("| " + " | ".join(_cell(x) for x in cells) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- models
def model_stage_lines(cert) -> list[str]:
    """A line per stage and the model's verdict (`optgen check`, the model's docstring).

    `cert` is an `optgen.analysis.model.ModelCertificate`.
    """
    lines = []
    for i, (network, stage) in enumerate(cert.stages):
        lines.append(
            f"stage {i} {network}: zero-stable {yes_no(stage.zero_stable)}, consistent "
            f"{yes_no(stage.consistent)}, universal {verdict_word(stage.universal)}"
        )
    lines.append(f"universal approximation: {verdict_word(cert.universal)}")
    lines.extend(f"  - {reason}" for reason in cert.reasons)
    return lines


def model_check_text(cert) -> str:
    """What `optgen check` prints for a model."""
    head = f"model {cert.name}: {len(cert.stages)} stage(s)"
    return "\n".join([head, *(f"  {line}" for line in model_stage_lines(cert))])


MODEL_HEADER = ("model", "file", "stages", "params", "FLOPs", "MACs", "universal")


def model_markdown_table(rows) -> str:
    """The models of `optgen check --markdown`: rows of (file name, ModelCertificate,
    FLOPS or None, PARAMS), one image at the declared input size; MACs are FLOPs / 2."""
    lines = [
        "",
        "| " + " | ".join(MODEL_HEADER) + " |",
        "|" + "---|" * len(MODEL_HEADER),
    ]
    for file_name, cert, flops, params in rows:
        stages = ", ".join(network for network, _ in cert.stages)
        cells = [
            cert.name,
            f"`{file_name}`",
            stages,
            f"{params:,}",
            "?" if flops is None else f"{flops:,}",
            "?" if flops is None else f"{flops // 2:,}",
            verdict_word(cert.universal),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
