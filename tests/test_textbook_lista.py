"""LISTA with its blocks replaced by the least-squares gradient A^T(Ax - b) is the textbook
ISTA iteration for the lasso min 1/2 |Ax - b|^2 + lam |x|_1 (issue 14, point 8):

    x_{k+1} = soft(x_k - t A^T (A x_k - b), t*lam),  soft(z, c) = sign(z) max(|z| - c, 0),

with numpy as the reference, to 1e-10 in float64."""

import numpy as np
import pytest
import torch
from conftest import EXAMPLES
from torch import nn

import optgen

N, M = 6, 9  # unknowns (the feature size dim) and measurements
T_STEP = 0.1  # the fixed step of examples/lista.opt


class LeastSquaresGradient(nn.Module):
    """Stands in for a block: z -> A^T (A z - b), on the last axis of z."""

    def __init__(self, A: np.ndarray, b: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("A", torch.from_numpy(A))
        self.register_buffer("b", torch.from_numpy(b))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (z @ self.A.T - self.b) @ self.A


def problem(seed: int = 0):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((M, N))
    A *= 0.9 / (np.linalg.norm(A, 2) * np.sqrt(T_STEP))  # t |A|^2 < 1: ISTA converges
    x_true = np.where(rng.random(N) < 0.5, rng.standard_normal(N), 0.0)
    b = A @ x_true + 0.01 * rng.standard_normal(M)
    x0 = rng.standard_normal((3, N))  # three starting points, as a batch
    return A, b, x0


def ista(A, b, x0, lam, depth: int) -> np.ndarray:
    """The textbook iteration, in numpy; `lam(k)` the threshold parameter of layer k."""
    x = x0.copy()
    for k in range(depth):
        z = x - T_STEP * (x @ A.T - b) @ A
        threshold = T_STEP * lam(k)
        x = np.sign(z) * np.maximum(np.abs(z) - threshold, 0.0)
    return x


def as_ista(module: nn.Module, A, b) -> nn.Module:
    gradient = LeastSquaresGradient(A, b)
    layers = module.blocks["T"]
    for index in range(len(layers)):
        layers[index] = gradient
    return module


@pytest.fixture(scope="module")
def Lista():
    return optgen.load(EXAMPLES / "lista.opt")["Lista"]


def test_lista_with_fixed_thresholds_is_ista(Lista):
    A, b, x0 = problem()
    depth = 12
    module = as_ista(Lista(N, depth=depth).double(), A, b)
    module.set_params(lam=1.5)  # the learned thresholds held at one value
    with torch.no_grad():
        out = module(torch.from_numpy(x0)).numpy()
    expected = ista(A, b, x0, lambda k: 1.5, depth)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-10)
    assert (expected == 0).any() and (expected != 0).any()  # the shrink acts


def test_lista_with_a_threshold_per_layer_is_ista_with_that_schedule(Lista):
    A, b, x0 = problem(seed=1)
    depth = 8
    module = as_ista(Lista(N, depth=depth).double(), A, b)
    schedule = [0.5 / (k + 1) for k in range(depth)]
    module.set_params(lam=torch.tensor(schedule)[:, None].expand(depth, N))
    with torch.no_grad():
        out = module(torch.from_numpy(x0)).numpy()
    np.testing.assert_allclose(out, ista(A, b, x0, lambda k: schedule[k], depth), atol=1e-10)


def test_a_fixed_threshold_rule_is_ista_through_f_softshrink():
    text = (EXAMPLES / "lista.opt").read_text()
    fixed = text.replace(
        "param lam = 0.1 learnable positive per_layer per_channel", "param lam = 0.3"
    )
    assert fixed != text
    Lista = optgen.loads(fixed, "lista_fixed.opt")["Lista"]
    A, b, x0 = problem(seed=2)
    module = as_ista(Lista(N, depth=10).double(), A, b)
    with torch.no_grad():
        out = module(torch.from_numpy(x0)).numpy()
    np.testing.assert_allclose(out, ista(A, b, x0, lambda k: 0.3, 10), rtol=0, atol=1e-10)


def test_ista_converges_to_the_lasso_solution(Lista):
    """The iteration reaches a point of the lasso's optimality condition: the sanity check
    that the reference above is ISTA and not just equal to the module."""
    A, b, x0 = problem()
    lam = 0.3
    module = as_ista(Lista(N, depth=400).double(), A, b)
    module.set_params(lam=lam)
    with torch.no_grad():
        x = module(torch.from_numpy(x0)).numpy()
    gradient = (x @ A.T - b) @ A
    active = x != 0
    # 0 in grad + lam * subdifferential of |x|_1
    np.testing.assert_allclose(gradient[active], -lam * np.sign(x[active]), atol=1e-6)
    assert (np.abs(gradient[~active]) <= lam + 1e-6).all()
