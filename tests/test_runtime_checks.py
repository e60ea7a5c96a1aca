"""Run-time checks of a generated module: a depth or dim out of bounds, and a value that
`set_params` would store outside its declared range once rounded to the module's dtype,
are clear ValueErrors, and nothing is set."""

import warnings

import pytest
import torch

import optgen

RULE = """
network P {
    state x
    param t = 0.5 learnable positive
    param beta = 0.5 learnable in [0, 1)
    block T = mlp(hidden=2*dim, act=relu)
    layers 2
    update { x+ = x - t*T(x) + beta*(x - x-) }
}
"""


@pytest.fixture(scope="module")
def cls():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return optgen.loads(RULE, "p.opt")["P"]


@pytest.mark.parametrize(
    "values, message",
    [
        ({"t": 1e39}, "t = [1e+39] is not finite in float32"),
        ({"beta": 1 - 1e-12}, "rounds to [1.0] in float32, outside its range (0 <= beta < 1)"),
        ({"t": 1e-300}, "t = [1e-300] rounds to 0 in float32, outside its range (0 < t)"),
        ({"t": 0.3, "beta": 1 - 1e-12}, "rounds to [1.0] in float32"),
    ],
)
def test_set_params_refuses_a_value_its_dtype_cannot_hold(cls, values, message):
    module = cls(4)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    with pytest.raises(ValueError) as caught:
        module.set_params(**values)
    assert message in str(caught.value)
    after = module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing set


def test_set_params_takes_in_float64_what_float32_rounds_away(cls):
    module = cls(4).double()
    module.set_params(beta=1 - 1e-12, t=1e-300)
    assert module.params()["beta"].item() < 1.0
    assert module.params()["t"].item() > 0.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dim": 0}, "dim must be an int from 1 to 1048576, got 0"),
        ({"dim": 2**21}, "dim must be an int from 1 to 1048576, got 2097152"),
        ({"dim": 4, "depth": 10**12}, "depth must be at most 100000, got 1000000000000"),
        ({"dim": 4, "depth": 0}, "depth must be a positive int, got 0"),
    ],
)
def test_a_depth_or_dim_out_of_bounds_is_refused_before_any_block_is_built(cls, kwargs, message):
    with pytest.raises(ValueError) as caught:
        cls(**kwargs)
    assert message in str(caught.value)
