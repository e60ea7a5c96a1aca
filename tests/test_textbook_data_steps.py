"""Steps that depend on the data (issue 27, point 3): Barzilai-Borwein, Polyak's step and
FISTA with a gradient restart test, each compiled from the catalog, its block replaced by
the gradient of a known function in float64, against the textbook iteration written here
in numpy, sample by sample (each sample of the batch gets its own step)."""

import math
import warnings

import numpy
import pytest
import torch
from conftest import EXAMPLES
from test_textbook_apg2 import LeastSquaresGradient
from torch import nn

import optgen

BATCH, DIM = 5, 6


def catalog_class(stem: str, name: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optgen.OptgenWarning)
        return optgen.load(EXAMPLES / f"{stem}.opt")[name]


def with_gradient(cls, gradient: nn.Module, depth: int) -> nn.Module:
    module = cls(DIM, depth=depth).double()
    module.blocks["T"] = nn.ModuleList([gradient] * depth)
    return module


def run(module: nn.Module, x0: numpy.ndarray) -> numpy.ndarray:
    with torch.no_grad():
        return module(torch.tensor(x0)).numpy()


def least_squares(seed: int, condition: float = 1.0):
    rng = numpy.random.default_rng(seed)
    A = rng.standard_normal((8, DIM)) @ numpy.diag(numpy.linspace(1.0, condition, DIM))
    A /= numpy.linalg.norm(A, 2)  # L = 1
    b = rng.standard_normal(8)
    x0 = rng.standard_normal((BATCH, DIM))
    return A, b, x0


def textbook_barzilai_borwein(A, b, x0, t0, tmax, iterations):
    """BB1: alpha_0 = t0, then alpha_k = min(s's / max(s'y, 1e-12), tmax)."""

    def grad(x):
        return A.T @ (A @ x - b)

    out = []
    for x in x0:
        x_prev = g_prev = None
        for k in range(iterations):
            g = grad(x)
            if k == 0:
                alpha = t0
            else:
                s, y = x - x_prev, g - g_prev
                alpha = min(s @ s / max(s @ y, 1e-12), tmax)
            x_prev, g_prev = x, g
            x = x - alpha * g
        out.append(x)
    return numpy.array(out)


@pytest.mark.parametrize("depth", [1, 2, 12])
def test_barzilai_borwein_is_the_textbook_iteration(depth):
    A, b, x0 = least_squares(27)
    module = with_gradient(
        catalog_class("barzilai_borwein", "BarzilaiBorwein"), LeastSquaresGradient(A, b), depth
    )
    expected = textbook_barzilai_borwein(A, b, x0, 0.1, 2.0, depth)
    numpy.testing.assert_allclose(run(module, x0), expected, rtol=0, atol=1e-10)


class QuadraticGradient(nn.Module):
    """grad f(x) = M x of f(x) = x'Mx/2, M symmetric positive definite: min f = 0 at 0."""

    def __init__(self, M: numpy.ndarray):
        super().__init__()
        self.register_buffer("M", torch.tensor(M))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.M


def textbook_polyak(M, x0, gamma, iterations):
    """x+ = x - gamma (f(x) - f*)/|grad f(x)|^2 grad f(x), f* = 0 (f computed from M)."""
    out = []
    for x in x0:
        for _ in range(iterations):
            g = M @ x
            f = 0.5 * x @ M @ x
            x = x - gamma * f / (g @ g) * g
        out.append(x)
    return numpy.array(out)


def test_polyak_is_the_textbook_iteration_on_a_quadratic():
    rng = numpy.random.default_rng(5)
    Q = rng.standard_normal((DIM, DIM))
    M = Q @ Q.T / DIM + 0.1 * numpy.eye(DIM)
    x0 = rng.standard_normal((BATCH, DIM))
    module = with_gradient(catalog_class("polyak", "Polyak"), QuadraticGradient(M), 10)
    out = run(module, x0)
    numpy.testing.assert_allclose(out, textbook_polyak(M, x0, 1.0, 10), rtol=0, atol=1e-10)
    assert numpy.linalg.norm(out) < numpy.linalg.norm(x0)  # it descends


def textbook_fista_restart(A, b, x0, step, iterations):
    """FISTA; where grad f(y_k)'(x_{k+1} - x_k) > 0 (O'Donoghue and Candes' gradient
    test) the momentum of that step is dropped. Returns the iterates and the restarts."""

    def grad(x):
        return A.T @ (A @ x - b)

    out, restarts = [], 0
    for x in x0:
        y, t = x.copy(), 1.0
        for _ in range(iterations):
            g = grad(y)
            x_next = y - step * g
            t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
            beta = (t - 1) / t_next
            if g @ (x_next - x) > 0:
                beta, restarts = 0.0, restarts + 1
            y = x_next + beta * (x_next - x)
            x, t = x_next, t_next
        out.append(x)
    return numpy.array(out), restarts


def test_fista_with_gradient_restart_is_the_textbook_iteration():
    A, b, x0 = least_squares(3, condition=30.0)  # ill-conditioned: the momentum overshoots
    depth = 40
    module = with_gradient(
        catalog_class("fista_restart", "FistaRestart"), LeastSquaresGradient(A, b), depth
    )
    expected, restarts = textbook_fista_restart(A, b, x0, 0.5, depth)
    assert restarts > 0  # the test exercises the restart
    numpy.testing.assert_allclose(run(module, x0), expected, rtol=0, atol=1e-10)
