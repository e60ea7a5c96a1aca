"""Implicit and equilibrium layers: solves that converge, implicit gradients, honest reports."""

import warnings

import pytest
import torch
from conftest import EXAMPLES, load_generated

import optgen

PPM = (EXAMPLES / "ppm.opt").read_text()


def make(stem: str, class_name: str, dtype=torch.float64, **kwargs):
    torch.manual_seed(0)
    return getattr(load_generated(stem), class_name)(6, **kwargs).to(dtype)


def inputs(dtype=torch.float64, batch=5):
    return torch.randn(batch, 6, generator=torch.Generator().manual_seed(3), dtype=dtype)


@pytest.mark.parametrize(
    "stem, class_name", [("ppm", "Ppm"), ("fista_implicit", "FistaImplicit"), ("deq", "Deq")]
)
def test_every_solve_converges_below_the_declared_tolerance(stem, class_name):
    module = make(stem, class_name, torch.float32)
    out = module(inputs(torch.float32))
    stats = module.solver_stats
    assert len(stats) == (1 if stem == "deq" else module.depth)
    assert [s["layer"] for s in stats] == list(range(len(stats)))
    for s in stats:
        assert set(s) == {"layer", "phase", "iterations", "residual", "converged"}
        assert s["phase"] == "forward" and s["converged"] and s["residual"] <= 1e-4
    # The residual is the real one: one more application of the layer map barely moves the output.
    assert torch.isfinite(out).all()


def test_backward_implicit_appends_one_adjoint_solve_per_layer():
    module = make("ppm", "Ppm")
    module(inputs().requires_grad_()).sum().backward()
    phases = [s["phase"] for s in module.solver_stats]
    assert phases == ["forward"] * module.depth + ["backward"] * module.depth
    assert all(s["converged"] for s in module.solver_stats)


@pytest.mark.parametrize(
    "stem, class_name",
    [
        ("ppm", "Ppm"),
        ("fista_implicit", "FistaImplicit"),
        ("deq", "Deq"),
        ("pgd_implicit", "PgdImplicit"),
    ],
)
def test_implicit_gradients_agree_with_unrolled_ones_at_tight_tolerance(stem, class_name):
    grads = {}
    for mode in ("implicit", "unroll"):
        module = make(stem, class_name)
        module.solver = {"name": "fixed_point", "max_iter": 2000, "tol": 1e-8}
        module.backward = (
            {"name": mode, "max_iter": 2000, "tol": 1e-8} if mode == "implicit" else {"name": mode}
        )
        x = inputs().requires_grad_()
        module(x).tanh().sum().backward()
        grads[mode] = [x.grad] + [p.grad for p in module.parameters()]
    for implicit, unrolled in zip(grads["implicit"], grads["unroll"]):
        torch.testing.assert_close(implicit, unrolled, rtol=1e-4, atol=1e-8)


def saved_bytes_of_a_training_step(mode: str, max_iter: int) -> int:
    """Bytes of every tensor autograd keeps for the backward pass (the memory a step holds)."""
    module = make("ppm", "Ppm", on_failure="warn")
    module.solver = {
        "name": "fixed_point",
        "max_iter": max_iter,
        "tol": 0.0,
    }  # needs every iteration
    module.backward = (
        {"name": mode, "max_iter": 5, "tol": 0.0} if mode == "implicit" else {"name": mode}
    )
    seen: dict[tuple, int] = {}

    def pack(t):
        seen[(t.data_ptr(), t.dtype, tuple(t.shape))] = t.numel() * t.element_size()
        return t

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = module(inputs(batch=64).requires_grad_()).square().sum()
        loss.backward()
    assert all(s["iterations"] == max_iter for s in module.solver_stats if s["phase"] == "forward")
    return sum(seen.values())


def test_memory_of_backward_implicit_does_not_grow_with_solver_iterations_but_unroll_does():
    implicit = [saved_bytes_of_a_training_step("implicit", n) for n in (10, 100)]
    unroll = [saved_bytes_of_a_training_step("unroll", n) for n in (10, 100)]
    assert implicit[1] == implicit[0]
    assert unroll[1] > 5 * unroll[0]
    assert implicit[1] < unroll[0]


def ppm_variant(tmp_path, t: str, solver: str, **kwargs):
    """The ppm rule with another step and solver, compiled in memory."""
    text = PPM.replace("param t = 0.5", f"param t = {t}").replace("network Ppm", "network Wild")
    text = text.replace("anderson(m=5, max_iter=50, tol=1e-4)", solver)
    path = tmp_path / "wild.opt"
    path.write_text(text)
    torch.manual_seed(0)
    return optgen.load(path)["Wild"](6, **kwargs)


def diverging_module(tmp_path, **kwargs):
    # t = 3: t*T is no contraction, plain fixed-point iteration oscillates without blowing up.
    return ppm_variant(tmp_path, "3.0", "fixed_point(max_iter=50, tol=1e-4)", **kwargs)


def test_a_diverging_solve_warns_once_and_reports_not_converged(tmp_path):
    module = diverging_module(tmp_path)
    with pytest.warns(
        RuntimeWarning,
        match=r"Wild: the forward solve of layer 0 stopped after 50 iterations at relative residual .* > tol 0.0001 \(warned once per module\)",
    ):
        module(inputs(torch.float32))
    assert not module.solver_stats[0]["converged"]
    assert module.solver_stats[0]["residual"] > 1e-4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module(inputs(torch.float32))  # once per module: no second warning


def test_on_failure_raise_turns_a_missed_tolerance_into_an_error(tmp_path):
    module = diverging_module(tmp_path, on_failure="raise")
    with pytest.raises(
        RuntimeError, match=r"Wild: the forward solve of layer 0 stopped after 50 iterations"
    ):
        module(inputs(torch.float32))


def test_nan_in_a_solve_is_an_error_naming_the_layer():
    module = make("ppm", "Ppm", torch.float32)
    with torch.no_grad():
        module.blocks["T"][2].fc2.bias.fill_(float("nan"))
    with pytest.raises(
        FloatingPointError, match=r"Ppm: the forward solve of layer 2 produced NaN or inf"
    ):
        module(inputs(torch.float32))


def test_a_solve_that_blows_up_is_an_error_naming_the_layer(tmp_path):
    module = ppm_variant(tmp_path, "40.0", "anderson(m=5, max_iter=50, tol=1e-4)")
    with pytest.raises(
        FloatingPointError, match=r"Wild: the forward solve of layer 0 produced NaN or inf"
    ):
        module(inputs(torch.float32))


def test_on_failure_must_be_warn_or_raise():
    with pytest.raises(ValueError, match="on_failure must be 'warn' or 'raise', not 'ignore'"):
        make("ppm", "Ppm", on_failure="ignore")


def test_contraction_estimate_on_request_matches_the_jacobian():
    module = make("ppm", "Ppm", depth=1)
    module.contraction_iterations = 50
    x = inputs(batch=1)
    with torch.no_grad():
        module(x)
    estimate = module.solver_stats[0]["contraction"]
    # The layer map is z -> x - t*T(z); its Jacobian at the solution, computed densely.
    z = module(x).detach()
    jac = torch.autograd.functional.jacobian(lambda v: -0.5 * module.blocks["T"][0](v), z)[
        0, :, 0, :
    ]
    assert estimate == pytest.approx(torch.linalg.eigvals(jac).abs().max().item(), rel=0.05)
    module.contraction_iterations = 0
    module(x)
    assert "contraction" not in module.solver_stats[0]


def test_backward_phantom_unrolls_a_few_steps_at_the_solution():
    grads = {}
    for mode in ("phantom", "implicit"):
        module = make("ppm", "Ppm")
        module.solver = {"name": "anderson", "m": 5, "max_iter": 200, "tol": 1e-10}
        module.backward = (
            {"name": "phantom", "steps": 30}
            if mode == "phantom"
            else {"name": "implicit", "max_iter": 200, "tol": 1e-10}
        )
        x = inputs().requires_grad_()
        module(x).sum().backward()
        grads[mode] = x.grad
        if mode == "phantom":
            assert {s["phase"] for s in module.solver_stats} == {"forward"}
    # 30 steps of a contraction: the phantom gradient approaches the implicit one.
    torch.testing.assert_close(grads["phantom"], grads["implicit"], rtol=1e-3, atol=1e-6)


def test_anderson_regularization_is_relative_to_the_gram_scale():
    """An absolute lam = 1e-4 took over at small residuals: the catalog's Deq needed 125
    iterations to tol 1e-13 in float64, 30 with lam relative to the Gram diagonal."""
    torch.manual_seed(0)
    deq = load_generated("deq").Deq(16).double()
    deq.solver = {"name": "anderson", "m": 5, "max_iter": 500, "tol": 1e-13}
    with torch.no_grad():
        deq(torch.randn(8, 16, dtype=torch.float64))
    (stats,) = deq.solver_stats
    assert stats["converged"] and stats["iterations"] <= 60, stats
