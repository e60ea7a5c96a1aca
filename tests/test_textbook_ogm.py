"""The optimized gradient method (OGM, Kim and Fessler 2016), whose last step differs from
the others, written once with `L` (issue 27, point 1): with the true gradient in place of
the block, the module built at two depths reproduces the textbook iteration at each."""

import math
import warnings

import numpy
import pytest
import torch
from test_textbook_apg2 import LeastSquaresGradient, problem
from torch import nn

import optgen

OGM = """
network Ogm {
    state x, y
    init y = x
    param t = 0.5
    param th[0] = 1
    param th[k+1] = (1 + sqrt(1 + 4*th^2))/2
    param last = floor((k + 1)/L)                # 1 at the last layer, 0 before it
    param thn = (1 - last)*th[k+1] + last*(1 + sqrt(1 + 8*th^2))/2
    block T = mlp(hidden=dim)
    layers 8
    update {
        y+ = x - t*T(x)
        x+ = y+ + (th - 1)/thn*(y+ - y) + th/thn*(y+ - x)
    }
    output x
}
"""


def textbook_ogm(A, b, x0, step, iterations):
    """OGM for least squares: theta_{k+1} = (1 + sqrt(1 + 4 theta_k^2))/2, and at the last
    iteration (1 + sqrt(1 + 8 theta_k^2))/2."""
    x, y, theta = x0.copy(), x0.copy(), 1.0
    for k in range(iterations):
        y_next = x - step * ((x @ A.T - b) @ A)
        factor = 8 if k == iterations - 1 else 4
        theta_next = (1 + math.sqrt(1 + factor * theta**2)) / 2
        x = y_next + (theta - 1) / theta_next * (y_next - y) + theta / theta_next * (y_next - x)
        y, theta = y_next, theta_next
    return x


@pytest.mark.parametrize("depth", [8, 13])
def test_ogm_is_the_textbook_iteration_at_the_depth_it_is_built_with(depth):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optgen.OptgenWarning)
        cls = optgen.loads(OGM, "ogm.opt")["Ogm"]
    A, b, x0 = problem()
    module = cls(x0.shape[1], depth=depth).double()
    module.blocks["T"] = nn.ModuleList([LeastSquaresGradient(A, b)] * depth)
    with torch.no_grad():
        out = module(torch.tensor(x0)).numpy()
    numpy.testing.assert_allclose(out, textbook_ogm(A, b, x0, 0.5, depth), rtol=0, atol=1e-10)
    # The last step is OGM's own, at whatever depth the module is built with.
    assert module.params()["last"].tolist() == [0.0] * (depth - 1) + [1.0]
