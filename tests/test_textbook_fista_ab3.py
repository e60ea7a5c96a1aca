"""The catalog's FISTA and Adams-Bashforth 3 are the textbook iterations.

With every block replaced by the true least-squares gradient A^T(Ax - b), the generated
modules must reproduce the iterations written here in numpy, in float64.
"""

import numpy as np
import pytest
import torch
from torch import nn

from tests.conftest import load_generated

DIM = 5


class LeastSquaresGradient(nn.Module):
    """z -> A^T(A z - b) for each row z (the gradient of 1/2 ||A z - b||^2)."""

    def __init__(self, A: np.ndarray, b: np.ndarray, calls: list | None = None):
        super().__init__()
        self.register_buffer("A", torch.tensor(A))
        self.register_buffer("b", torch.tensor(b))
        self.calls = calls

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.calls is not None:
            self.calls.append(1)
        return (z @ self.A.T - self.b) @ self.A


def problem(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((8, DIM))
    A /= np.linalg.norm(A, 2)  # L = ||A||^2 = 1, so the steps below are stable
    b = rng.standard_normal(8)
    x0 = rng.standard_normal((3, DIM))
    return A, b, x0


def gradient(A: np.ndarray, b: np.ndarray, x: np.ndarray) -> np.ndarray:
    return (x @ A.T - b) @ A


def with_gradient_blocks(module: nn.Module, A, b, calls=None) -> nn.Module:
    module.blocks["T"] = nn.ModuleList(
        [LeastSquaresGradient(A, b, calls) for _ in range(module.depth)]
    )
    return module.double()


def fista_reference(A, b, x0, step: float, iterations: int) -> np.ndarray:
    """Beck and Teboulle (2009), FISTA with constant step: y_1 = x_0, t_1 = 1,
    x_k = y_k - step*grad(y_k), t_{k+1} = (1 + sqrt(1 + 4 t_k^2))/2,
    y_{k+1} = x_k + (t_k - 1)/t_{k+1} (x_k - x_{k-1})."""
    x_prev, y, t = x0, x0, 1.0
    for _ in range(iterations):
        x = y - step * gradient(A, b, y)
        t_next = (1 + np.sqrt(1 + 4 * t * t)) / 2
        y = x + (t - 1) / t_next * (x - x_prev)
        x_prev, t = x, t_next
    return x_prev


def ab3_reference(A, b, x0, step: float, iterations: int) -> np.ndarray:
    """Adams-Bashforth 3 for dx/dt = -grad(x), started as the language says: before
    layer 0 the gradient history equals the gradient at x_0."""
    x = x0
    history = []
    for _ in range(iterations):
        history.append(gradient(A, b, x))
        g, g1, g2 = (
            history[-1],
            history[max(len(history) - 2, 0)],
            history[max(len(history) - 3, 0)],
        )
        x = x - step * (23 / 12 * g - 16 / 12 * g1 + 5 / 12 * g2)
    return x


@pytest.mark.parametrize("depth", [16, 40])  # the declared depth, and a deeper module
def test_fista_reproduces_the_textbook_iteration(depth):
    A, b, x0 = problem()
    fista = load_generated("fista")
    module = with_gradient_blocks(fista.Fista(DIM, depth=depth), A, b)
    out = module(torch.tensor(x0)).detach().numpy()
    np.testing.assert_allclose(out, fista_reference(A, b, x0, 0.5, depth), rtol=0, atol=1e-10)


def test_fista_decreases_the_least_squares_objective():
    A, b, x0 = problem(1)
    module = with_gradient_blocks(load_generated("fista").Fista(DIM, depth=40), A, b)
    out = module(torch.tensor(x0)).detach().numpy()

    def objective(x):
        return 0.5 * np.sum((x @ A.T - b) ** 2, axis=-1)

    assert (objective(out) < objective(x0)).all()


@pytest.mark.parametrize("depth", [16, 3, 1])
def test_adams_bashforth3_reproduces_the_textbook_iteration(depth):
    A, b, x0 = problem(2)
    ab3 = load_generated("adams_bashforth3")
    module = with_gradient_blocks(ab3.AdamsBashforth3(DIM, depth=depth), A, b)
    out = module(torch.tensor(x0)).detach().numpy()
    np.testing.assert_allclose(out, ab3_reference(A, b, x0, 0.1, depth), rtol=0, atol=1e-10)


def test_adams_bashforth3_calls_its_block_once_per_layer():
    A, b, x0 = problem(3)
    calls: list = []
    module = with_gradient_blocks(
        load_generated("adams_bashforth3").AdamsBashforth3(DIM, depth=16), A, b, calls
    )
    module(torch.tensor(x0))
    assert len(calls) == 16
