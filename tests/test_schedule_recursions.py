"""Recursions that read their earlier values (`tk[k-1]`) and other schedules (issue 27,
point 2), checked against loops written here and against the reference interpreter, at
the declared depth and deeper (where the module continues the recursions itself)."""

import math

import pytest
from conftest import run_optgen
from test_reference import assert_agrees, build, sample_input

import optgen
from optgen import api

ESTIMATE = """
network EstimateSequence {
    state x, y
    init y = x
    param f[0] = 1
    param f[k+1] = f + f[k-1]
    param A[0] = 0
    param A[k+1] = A + (1 + sqrt(1 + 4*A))/2
    param a[0] = 1
    param a[k+1] = A[k+1] - A + f/100
    param beta = a/(a + 2)
    block T = mlp(hidden=dim)
    layers 6
    update {
        x+ = y - T(y)/(1 + A[k+1]/10)
        y = x+ + beta*(x+ - x) - T(y)/(f*50)
    }
    output x
}
"""


def by_hand(count: int):
    """f, A and a as the textbook writes them: f the Fibonacci numbers from f[0] = 1
    (f[-1] = f[0]), A_{k+1} = A_k + a'_{k+1} with a'_{k+1}^2 = A_{k+1}, and a the
    difference of A plus f[k]/100."""
    f = [1.0]
    for k in range(count):
        f.append(f[k] + f[max(k - 1, 0)])
    big = [0.0]
    for k in range(count):
        big.append(big[k] + (1 + math.sqrt(1 + 4 * big[k])) / 2)
    a = [1.0]
    for k in range(count):
        a.append(big[k + 1] - big[k] + f[k] / 100)
    return f, big, a


@pytest.fixture(scope="module")
def estimate():
    classes = optgen.loads(ESTIMATE, "estimate.opt")
    network = api.frontend(ESTIMATE, "estimate.opt").networks[0]
    return network, classes["EstimateSequence"]


def test_the_estimate_sequence_keeps_its_identity():
    _, big, _ = by_hand(12)
    a_plain = [big[k + 1] - big[k] for k in range(11)]
    assert all(abs(a * a - big[k + 1]) < 1e-9 * big[k + 1] for k, a in enumerate(a_plain))


@pytest.mark.parametrize("depth", [6, 11])
def test_lags_and_coupled_schedules_follow_the_loops_written_here(estimate, depth):
    _, cls = estimate
    values = cls(3, depth=depth).double().params()
    f, big, a = by_hand(depth)
    assert values["f"].tolist() == pytest.approx(f[:depth], rel=1e-15)
    assert values["A"].tolist() == pytest.approx(big[:depth], rel=1e-14)
    assert values["a"].tolist() == pytest.approx(a[:depth], rel=1e-14)


@pytest.mark.parametrize("depth", [6, 11])
def test_the_module_agrees_with_the_reference(estimate, depth):
    network, cls = estimate
    module = build(network, cls, seed=depth, depth=depth)
    assert_agrees(network, module, sample_input(network, seed=depth))


def test_schedules_named_alike_keep_their_own_tables(estimate):
    # Found by the reference: the tables of schedules `A` and `a` were both named
    # _ESTIMATE_SEQUENCE_A_VALUES, and the second replaced the first (A read a's values).
    network, cls = estimate
    import sys

    module = sys.modules[cls.__module__]
    assert module._ESTIMATE_SEQUENCE_A_VALUES[:3] == pytest.approx([0.0, 1.0, 2.618033988749895])
    assert module._ESTIMATE_SEQUENCE_A_VALUES_2[:2] == pytest.approx([1.0, 1.01])


RULE = """network N {
    state x
    PARAMS
    block T = mlp(hidden=dim)
    layers 4
    update {
        x+ = x - tk*T(x)
    }
    output x
}
"""
ERRORS = {
    "too_deep": (
        "param tk[0] = 1\n    param tk[k+1] = tk[k-65]/2",
        "4:24: error: lag -65 is too deep",
    ),
    "start_reads_a_later_schedule": (
        "param tk[0] = s\n    param tk[k+1] = tk/2 + s\n    param s[0] = 1\n    param s[k+1] = s/2",
        "3:19: error: schedule tk uses 's', which is declared after it",
    ),
    "param_reads_a_later_schedule": (
        "param tk = s/2\n    param s[0] = 1\n    param s[k+1] = s/2",
        "3:16: error: param 'tk' uses 's', which is declared after it",
    ),
    "coupled_cycle_at_k_plus_1": (
        "param tk[0] = 1\n    param tk[k+1] = tk/2 + s[k+1]\n"
        "    param s[0] = 1\n    param s[k+1] = s/2 + tk[k+1]",
        "4:28: error: the recursions of s and tk wait for each other: tk[k+1] -> s[k+1] -> tk[k+1]",
    ),
    "coupled_read_two_ahead": (
        "param tk[0] = 1\n    param tk[k+1] = tk/2 + s[k+2]\n    param s[0] = 1\n    param s[k+1] = s/2",
        "4:28: error: the recursion of tk reads s, declared after it, at 's[k + 2]'",
    ),
    "coupled_read_back_at_a_fixed_layer": (
        "param tk[0] = 1\n    param tk[k+1] = tk/2 + s\n    param s[0] = 1\n    param s[k+1] = s/2 + tk[3]",
        "6:26: error: the recursion of s reads tk, which reads it in turn, at 'tk[3]'",
    ),
    "coupled_read_at_a_fixed_layer": (
        "param tk[0] = 1\n    param tk[k+1] = tk/2 + s[2]\n    param s[0] = 1\n    param s[k+1] = s/2",
        "4:28: error: the recursion of tk reads s, declared after it, at 's[2]'",
    ),
    "lag_outside_the_recursion": (
        "param s[0] = 1\n    param s[k+1] = s/2\n    param tk = s[k-1]",
        "5:18: error: unsupported index 'k-1' of schedule 's'",
    ),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_a_bad_recursion_is_a_located_error(tmp_path, case):
    params, message = ERRORS[case]
    source = tmp_path / "rec.opt"
    source.write_text(RULE.replace("PARAMS", params))
    out = tmp_path / "out"
    done = run_optgen("compile", str(source), "-o", str(out))
    assert done.returncode == 1, done.stderr
    assert f"rec.opt:{message}" in done.stderr
    assert not out.exists()


# Coupled schedules (each reads the other, language.md 4.3): a reads b at k, which is
# declared after it; b reads a at k+1 and c at k; c reads a at k+1 and b at k.
COUPLED = """
network Coupled {
    state x
    param a[0] = 1
    param a[k+1] = a + b/2
    param b[0] = 0.5
    param b[k+1] = b/2 + a[k+1]/4 - c/8
    param c[0] = 0.25
    param c[k+1] = c/2 + a[k+1]/(1 + b)
    block T = mlp(hidden=dim)
    layers 5
    update {
        x+ = x - 0.1*a*T(x)/(a + b + c) - 0.01*c[k+1]*x
    }
    output x
}
"""


def coupled_by_hand(count: int):
    a, b, c = [1.0], [0.5], [0.25]
    for k in range(count):
        a.append(a[k] + b[k] / 2)
        b.append(b[k] / 2 + a[k + 1] / 4 - c[k] / 8)
        c.append(c[k] / 2 + a[k + 1] / (1 + b[k]))
    return a, b, c


@pytest.fixture(scope="module")
def coupled():
    classes = optgen.loads(COUPLED, "coupled.opt")
    network = api.frontend(COUPLED, "coupled.opt").networks[0]
    return network, classes["Coupled"]


@pytest.mark.parametrize("depth", [5, 12])
def test_coupled_schedules_follow_the_loop_written_here(coupled, depth):
    # At depth 12 the module continues all three side by side (one joint function).
    _, cls = coupled
    values = cls(3, depth=depth).double().params()
    a, b, c = coupled_by_hand(depth)
    for name, expected in (("a", a), ("b", b), ("c", c)):
        assert values[name].tolist() == pytest.approx(expected[:depth], rel=1e-14), name


@pytest.mark.parametrize("depth", [5, 12])
def test_coupled_schedules_agree_with_the_reference(coupled, depth):
    network, cls = coupled
    module = build(network, cls, seed=depth, depth=depth)
    assert_agrees(network, module, sample_input(network, seed=depth))


def test_coupled_schedules_are_continued_by_one_joint_function(coupled):
    import sys

    module = sys.modules[coupled[1].__module__]
    assert module._coupled_a(3) == module._coupled_a_b_c(3)[0]
    for found, expected in zip(module._coupled_a_b_c(9), coupled_by_hand(8)):
        assert found == pytest.approx(expected, rel=1e-14)


# Nesterov's accelerated method from estimate sequences (the method of similar triangles),
# whose two sequences are coupled: a_{k+1} solves L a^2 = A_k + a, and A_{k+1} = A_k + a.
def textbook_similar_triangles(A, b, x0, lipschitz, iterations):
    x, v, big = x0.copy(), x0.copy(), 0.0
    for _ in range(iterations):
        a = (1 + math.sqrt(1 + 4 * lipschitz * big)) / (2 * lipschitz)
        y = (big * x + a * v) / (big + a)
        g = (y @ A.T - b) @ A
        x = y - g / lipschitz
        v = v - a * g
        big += a
    return x


@pytest.mark.parametrize("depth", [16, 23])
def test_similar_triangles_is_the_textbook_iteration(depth):
    import numpy
    import torch
    from conftest import EXAMPLES
    from test_textbook_apg2 import LeastSquaresGradient, problem
    from torch import nn

    cls = optgen.load(EXAMPLES / "similar_triangles.opt")["SimilarTriangles"]
    A, b, x0 = problem()
    module = cls(x0.shape[1], depth=depth).double()
    module.blocks["T"] = nn.ModuleList([LeastSquaresGradient(A, b)] * depth)
    with torch.no_grad():
        out = module(torch.tensor(x0)).numpy()
    expected = textbook_similar_triangles(A, b, x0, 2.0, depth)  # t = 0.5 = 1/L
    numpy.testing.assert_allclose(out, expected, rtol=0, atol=1e-10)
