"""`module.params()` / `module.set_params(**values)` and exact float64 start values
(language.md section 13; issue 14, point 5)."""

import pytest
import torch
from conftest import load_generated

import optgen

RULE = """
network Tuned {
    state x
    param t = 0.1 learnable positive
    param beta = 0.3 learnable in [0, 1)
    param gamma = 0.7 learnable in (0.5, 2)
    param s = 0.1*(k + 1) learnable per_layer positive
    param c = 0.25
    param theta = 2/(k+2)
    block T = mlp(hidden=dim)
    layers 3
    update { x+ = x - t*T(x) + beta*(x - x-) - s*gamma*c*theta*T(x) }
}
"""


@pytest.fixture(scope="module")
def Tuned():
    namespace: dict = {}
    source = optgen.compile_source(RULE, "tuned.opt")["tuned.py"]
    exec(compile(source, "tuned.py", "exec"), namespace)
    return namespace["Tuned"]


def test_params_lists_every_param_at_the_value_the_rule_uses(Tuned):
    values = Tuned(4).double().params()
    assert list(values) == ["t", "beta", "gamma", "s", "c", "theta"]
    # .double() holds the declared values to float64's rounding, not float32's (1e-8).
    exact = pytest.approx
    assert values["t"].item() == exact(0.1, rel=1e-15, abs=0)
    assert values["beta"].item() == exact(0.3, rel=1e-15, abs=0)
    assert values["gamma"].item() == exact(0.7, rel=1e-15, abs=0)
    assert values["s"].tolist() == exact([0.1, 0.2, 0.1 * 3], rel=1e-15, abs=0)
    assert values["c"].item() == 0.25 and values["theta"].tolist() == [1.0, 2 / 3, 0.5]
    assert all(v.dtype == torch.float64 for v in values.values())
    # A stage continuing a recurrence reads its schedules from its first layer on.
    assert Tuned(4, start=2).double().params()["theta"].tolist() == [0.5, 0.4, 1 / 3]


def test_set_params_inverts_the_reparametrization(Tuned):
    module = Tuned(4).double()
    module.set_params(t=2.5, beta=0.75, gamma=1.5, s=[0.5, 0.25, 0.125])
    values = module.params()
    torch.testing.assert_close(values["t"], torch.tensor(2.5, dtype=torch.float64))
    torch.testing.assert_close(values["beta"], torch.tensor(0.75, dtype=torch.float64))
    torch.testing.assert_close(values["gamma"], torch.tensor(1.5, dtype=torch.float64))
    torch.testing.assert_close(values["s"], torch.tensor([0.5, 0.25, 0.125], dtype=torch.float64))
    module.set_params(s=0.3)  # one value for every layer
    torch.testing.assert_close(module.params()["s"], torch.full((3,), 0.3, dtype=torch.float64))
    # A large positive value does not overflow the inverse softplus.
    module.set_params(t=500.0)
    assert module.params()["t"].item() == pytest.approx(500.0)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"t": -1.0}, "t must be > 0"),
        ({"beta": 1.0}, r"beta must lie in \(0, 1\)"),
        ({"gamma": 0.5}, r"gamma must lie in \(0.5, 2\)"),
        ({"s": [1.0, 2.0]}, "s takes 3 value"),
        ({"c": 0.5}, "param c is fixed"),
        ({"tt": 0.5}, "has no param 'tt'; learnable: t, beta, gamma, s"),
        ({"t": float("nan")}, "t must be finite"),
    ],
)
def test_set_params_refuses_what_the_rule_cannot_hold_and_sets_nothing(Tuned, values, message):
    module = Tuned(4)
    before = {name: p.detach().clone() for name, p in module.named_parameters()}
    with pytest.raises(ValueError, match=message):
        module.set_params(t=0.2, **values) if "t" not in values else module.set_params(**values)
    for name, p in module.named_parameters():
        assert torch.equal(p, before[name]), name


def test_a_trained_param_is_not_reset_by_a_dtype_change(Tuned):
    module = Tuned(4)
    module.set_params(t=0.4)
    raw = module.t_raw.detach().clone()
    untouched = module.beta_raw.detach().clone()
    module.double()
    assert module.t_raw.item() == raw.item()  # float32's raw, kept: not reset to the start
    assert module.beta_raw.item() != untouched.item()  # the start, now exact in float64


def test_every_catalog_module_has_params_and_set_params():
    nesterov = load_generated("nesterov").Nesterov(4)
    assert set(nesterov.params()) == {"t", "beta"}
    nesterov.set_params(t=0.5)
    assert nesterov.params()["t"].item() == pytest.approx(0.5)
    deq = load_generated("deq").Deq(4)
    assert deq.params()["t"].item() == 0.5
