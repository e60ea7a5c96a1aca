"""apg2 is Nesterov's second method: with the true gradient in place of the block, the
generated network reproduces the textbook iteration (issue 14)."""

import numpy
import torch
from conftest import load_generated
from torch import nn

DIM, DEPTH, BATCH = 5, 12, 3
STEP = 0.5  # the rule's t


class LeastSquaresGradient(nn.Module):
    """grad f(x) = A^T (A x - b) of f(x) = |A x - b|^2 / 2, row by row."""

    def __init__(self, A: numpy.ndarray, b: numpy.ndarray):
        super().__init__()
        self.register_buffer("A", torch.tensor(A))
        self.register_buffer("b", torch.tensor(b))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.A.T - self.b) @ self.A


def textbook_apg2(A, b, x0, step, iterations):
    """Nesterov's second method (Tseng's form) for least squares, theta_k = 2/(k+2)."""
    x, z = x0.copy(), x0.copy()
    for k in range(iterations):
        theta = 2 / (k + 2)
        y = (1 - theta) * x + theta * z
        z = z - (step / theta) * ((y @ A.T - b) @ A)
        x = (1 - theta) * x + theta * z
    return x


def problem():
    rng = numpy.random.default_rng(14)
    A = rng.standard_normal((8, DIM))
    A /= numpy.linalg.norm(A, 2)  # L = 1: the step t = 0.5 is below 1/L
    b = rng.standard_normal(8)
    x0 = rng.standard_normal((BATCH, DIM))
    return A, b, x0


def network_with_gradient(A, b):
    module = load_generated("apg2").Apg2(DIM, depth=DEPTH).double()
    gradient = LeastSquaresGradient(A, b)
    module.blocks["T"] = nn.ModuleList([gradient] * len(module.blocks["T"]))
    return module


def test_apg2_with_the_least_squares_gradient_is_the_textbook_iteration():
    A, b, x0 = problem()
    module = network_with_gradient(A, b)
    with torch.no_grad():
        out = module(torch.tensor(x0)).numpy()
    expected = textbook_apg2(A, b, x0, STEP, DEPTH)
    numpy.testing.assert_allclose(out, expected, rtol=0, atol=1e-10)


def test_apg2_decreases_the_least_squares_objective():
    A, b, x0 = problem()
    with torch.no_grad():
        out = network_with_gradient(A, b)(torch.tensor(x0)).numpy()

    def f(x):
        return 0.5 * numpy.sum((x @ A.T - b) ** 2, axis=-1)

    best = f(numpy.linalg.lstsq(A, b, rcond=None)[0][None, :])
    assert numpy.all(f(out) - best < 0.1 * (f(x0) - best))
