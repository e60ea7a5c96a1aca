"""An independent oracle for one-state multistep rules.

For  x+ = a0*x + a1*x[k-1] + a2*x[k-2] - t*(b0*T(x) + b1*T(x[k-1]))  the textbook LMM
polynomials are rho(z) = z^3 - a0 z^2 - a1 z - a2 and sigma(z) = t (b0 z^2 + b1 z). The
oracle uses numpy.roots for the roots, exact fractions for rho(1), rho'(1) and
gcd(rho, rho') (repeated roots), and never calls optgen's analysis code.
"""

from __future__ import annotations

import random
from fractions import Fraction

import numpy
import pytest

from optgen.analysis import analyze
from optgen.resolve import resolve
from optgen.source import SourceFile
from optgen.syntax.parse import parse

SMALL = [Fraction(n, d) for d in (1, 2, 4) for n in range(-2 * d, 2 * d + 1)]
BOUNDARY = [  # (a0, a1, a2): rho with double roots on the circle, roots at -1, roots of unity
    (1, 1, -1),  # (z - 1)^2 (z + 1)
    (-1, 1, 1),  # (z - 1) (z + 1)^2
    (0, 0, 1),  # z^3 - 1
    (1, -1, 1),  # (z - 1) (z^2 + 1)
    (2, -1, 0),  # (z - 1)^2 z
    (0, 1, 0),  # z (z - 1) (z + 1)
    (3, -3, 1),  # (z - 1)^3
    (-1, 0, 0),  # z^2 (z + 1)
    (Fraction(3, 2), Fraction(-1, 2), 0),  # heavy ball beta = 0.5
    (0, 0, 0),
]


# ---------------------------------------------------------------- polynomial helpers on fractions (highest first)
def _trim(p):
    while len(p) > 1 and p[0] == 0:
        p = p[1:]
    return p


def _rem(a, b):
    a = list(a)
    while len(a) >= len(b) and any(a):
        factor = a[0] / b[0]
        for i in range(len(b)):
            a[i] -= factor * b[i]
        a = a[1:]
    return _trim(a or [Fraction(0)])


def _gcd(a, b):
    a, b = _trim(a), _trim(b)
    while any(b):
        a, b = b, _rem(a, b)
    return a


def _derivative(p):
    n = len(p) - 1
    return [c * (n - i) for i, c in enumerate(p[:-1])] or [Fraction(0)]


def _value(p, z):
    total = Fraction(0)
    for c in p:
        total = total * z + c
    return total


def oracle(a, b, t):
    """Roots, zero-stable, consistent, step for the rule with coefficients a, b and step t."""
    rho = [Fraction(1), -a[0], -a[1], -a[2]]
    sigma_at_one = t * (b[0] + b[1])
    roots = numpy.roots([float(c) for c in rho])
    repeated = _gcd(rho, _derivative(rho))
    repeated_roots = numpy.roots([float(c) for c in repeated]) if len(repeated) > 1 else []
    inside = all(abs(r) <= 1 + 1e-9 for r in roots)
    simple_on_circle = not any(abs(abs(r) - 1) < 1e-6 for r in repeated_roots)
    slope = _value(_derivative(rho), 1)
    step = sigma_at_one / slope if slope != 0 else None
    consistent = _value(rho, 1) == 0 and slope != 0 and step > 0
    return roots, inside and simple_on_circle, consistent, step


# ---------------------------------------------------------------- the rules
def _num(x: Fraction) -> str:
    return f"({x.numerator}/{x.denominator})" if x.denominator != 1 else f"({x.numerator})"


def rule_text(i: int, a, b, t) -> str:
    params = "; ".join(
        f"param {n} = {_num(Fraction(v))}"
        for n, v in zip(["a0", "a1", "a2", "b0", "b1", "t"], [*a, *b, t])
    )
    return (
        f"network R{i} {{ state x; {params}; block T = mlp(hidden=2*dim); layers 3\n"
        "update { x+ = a0*x + a1*x[k-1] + a2*x[k-2] - t*(b0*T(x) + b1*T(x[k-1])) } }\n"
    )


def cases():
    rng = random.Random(20240607)
    out = []
    for a in BOUNDARY:
        for b in [(1, 0), (1, -1), (Fraction(3, 2), Fraction(-1, 2)), (-1, 0)]:
            out.append((tuple(map(Fraction, a)), tuple(map(Fraction, b)), Fraction(1, 2)))
    while len(out) < 240:
        if rng.random() < 0.4:  # keep root 1: a0 + a1 + a2 = 1
            a0, a1 = rng.choice(SMALL), rng.choice(SMALL)
            a = (a0, a1, 1 - a0 - a1)
        else:
            a = tuple(rng.choice(SMALL) for _ in range(3))
        b = (rng.choice(SMALL), rng.choice(SMALL))
        t = rng.choice([Fraction(1, 10), Fraction(1, 2), Fraction(1), Fraction(-1, 2)])
        out.append((a, b, t))
    return out


CASES = cases()


@pytest.fixture(scope="module")
def certificates():
    # A file holds at most 64 networks (docs/language.md, "Limits"): 50 a file.
    certificates = []
    for first in range(0, len(CASES), 50):
        chunk = enumerate(CASES[first : first + 50], start=first)
        src = SourceFile("oracle.opt", "".join(rule_text(i, *case) for i, case in chunk))
        certificates += [analyze(net).as_dict() for net in resolve(parse(src), src)]
    return certificates


def _sorted(values):
    return sorted((complex(v) for v in values), key=lambda z: (round(z.real, 5), round(z.imag, 5)))


def test_enough_cases_with_boundaries():
    assert len(CASES) >= 200
    verdicts = [oracle(*case) for case in CASES]
    assert sum(1 for _, zs, _, _ in verdicts if zs) >= 20
    assert sum(1 for _, zs, _, _ in verdicts if not zs) >= 20
    assert sum(1 for _, _, c, _ in verdicts if c) >= 20


@pytest.mark.parametrize("index", range(len(CASES)))
def test_oracle_agrees(certificates, index):
    a, b, t = CASES[index]
    roots, zero_stable, consistent, step = oracle(a, b, t)
    got = certificates[index]
    assert len(got["roots"]) == 3
    # numpy.roots loses digits at a multiple root (eps^(1/m)): compare roots loosely, verdicts exactly
    assert _sorted(complex(re, im) for re, im in got["roots"]) == pytest.approx(
        _sorted(roots), abs=1e-4
    )
    assert got["zero_stable"] is zero_stable, (a, b, t, got["zero_stability"])
    assert got["consistent"] is consistent, (a, b, t, got["consistency"])
    if consistent:
        assert got["step"] == pytest.approx(float(step))
    assert got["rho"] == pytest.approx([float(-a[2]), float(-a[1]), float(-a[0]), 1.0])
