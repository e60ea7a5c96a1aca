"""`backward reversible` (language.md section 15): layers undone in backward, not kept.

The gradients equal those of plain autograd through the same layers, a training step
saves the same bytes at any depth, the certificate says how rounding errors grow through
the reconstruction, and rules that cannot be undone are located errors.
"""

import importlib.util
import warnings
from pathlib import Path

import pytest
import torch
from conftest import run_optgen

import optgen
from optgen.errors import OptgenWarning

BENCH_COMMON = Path(__file__).resolve().parent.parent / "bench" / "common.py"

HEAVY_BALL = """
network {name} {{
    state x
    param t = 0.5
    param beta = {beta} in [0, 1)
    block T = mlp(hidden=2*dim)
    layers {depth}
    {backward}
    update {{
        x+ = x - t*T(x) + beta*(x - x-)
    }}
}}
"""

# A momentum ResNet (Sander et al. 2021): two states, x = x+ - v+ undoes the layer; a
# learnable step and a block reading the input at every layer.
MOMENTUM = """
network {name} {{
    state x, v
    init v = 0
    param t = 0.5 learnable positive
    param beta = {beta}
    block T = mlp(hidden=2*dim)
    layers {depth}
    {backward}
    update {{
        v+ = beta*v - t*T(x) + 0.1*(input - x)
        x+ = x + v+
    }}
}}
"""

# Three steps, a momentum in k and a learnable coefficient on the oldest slot.
THREE_STEP = """
network {name} {{
    state x
    param beta = 0.05*k/(k + 1)
    param gamma = 0.9 learnable in (0, 1)
    block T = mlp(hidden=2*dim)
    layers {depth}
    {backward}
    update {{
        x+ = x - 0.5*T(x) + beta*(x - x-) + gamma*(x- - x[k-2])
    }}
}}
"""

# Nesterov: the block reads the extrapolated point y, which the next layer's slots give
# back only through y = x+ + t*T(y); backward solves it by fixed-point iteration, which
# converges when t*Lip(T) < 1 (t = 0.1 against a default-initialized mlp).
NESTEROV_RULE = """
network {name} {{
    state x, y
    init y = x
    param t = 0.1 learnable positive
    param beta = {beta} in [0, 1)
    block T = mlp(hidden=2*dim)
    layers {depth}
    {backward}
    update {{
        x+ = y - t*T(y)
        y = x+ + beta*(x+ - x)
    }}
}}
"""

RULES = {
    "heavy_ball": HEAVY_BALL,
    "momentum": MOMENTUM,
    "three_step": THREE_STEP,
    "nesterov": NESTEROV_RULE,
}


def pair(rule: str, depth: int, beta: float = 0.9):
    """The rule compiled twice, with and without backward reversible, same weights."""
    text = RULES[rule]
    source = text.format(
        name="Reversible", beta=beta, depth=depth, backward="backward reversible"
    ) + text.format(name="Plain", beta=beta, depth=depth, backward="")
    with warnings.catch_warnings():
        # the momentum rule's forcing term makes it inconsistent: not what is tested here
        warnings.simplefilter("ignore", OptgenWarning)
        classes = optgen.loads(source, f"{rule}.opt")
    torch.manual_seed(0)
    reversible = classes["Reversible"](6)
    plain = classes["Plain"](6)
    plain.load_state_dict(reversible.state_dict())
    return reversible, plain


def gradients(module, x):
    x = x.clone().requires_grad_()
    out = module(x)
    loss = (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum()
    names = [n for n, _ in module.named_parameters()]
    found = torch.autograd.grad(loss, [x, *module.parameters()])
    return out.detach(), dict(zip(["input", *names], found))


def relative(a, b) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


@pytest.mark.parametrize("rule", sorted(RULES))
def test_float64_gradients_equal_plain_autograd_at_depth_16(rule):
    reversible, plain = (m.double() for m in pair(rule, depth=16))
    x = torch.randn(5, 6, dtype=torch.float64)
    out, grads = gradients(reversible, x)
    expected_out, expected = gradients(plain, x)
    assert torch.equal(out, expected_out)
    assert grads.keys() == expected.keys() and len(grads) > 2
    for name, g in grads.items():
        assert relative(g, expected[name]) < 1e-10, name


def test_float32_gradients_agree_where_the_amplification_is_small():
    reversible, plain = pair("heavy_ball", depth=8, beta=0.95)
    assert reversible.CERTIFICATE["reversible"]["amplification"] < 50
    x = torch.randn(5, 6)
    _, grads = gradients(reversible, x)
    _, expected = gradients(plain, x)
    for name, g in grads.items():
        assert relative(g, expected[name]) < 1e-5, name


def test_backward_accumulates_into_grad_like_plain_autograd():
    reversible, plain = (m.double() for m in pair("momentum", depth=4))
    x = torch.randn(3, 6, dtype=torch.float64)
    for module in (reversible, plain):
        for _ in range(2):  # two steps accumulate
            module(x).square().sum().backward()
    for (name, p), q in zip(reversible.named_parameters(), plain.parameters()):
        assert relative(p.grad, q.grad) < 1e-10, name


def saved_bytes(module, x) -> int:
    """Bytes autograd saves for backward during one forward (saved_tensors_hooks)."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = module(x)
    out.square().sum().backward()
    return total


@pytest.mark.parametrize("rule", ["heavy_ball", "momentum", "nesterov"])
def test_a_training_step_saves_the_same_bytes_at_depth_8_and_64(rule):
    x = torch.randn(16, 6)
    shallow, plain_shallow = pair(rule, depth=8)
    deep, plain_deep = pair(rule, depth=64)
    assert saved_bytes(shallow, x) == saved_bytes(deep, x)
    assert saved_bytes(plain_deep, x) > 4 * saved_bytes(plain_shallow, x) / 2
    assert saved_bytes(deep, x) < saved_bytes(plain_shallow, x)


def _peak_tensor_bytes():
    """bench/common.py's PeakTensorBytes: live tensor bytes while the mode is on."""
    spec = importlib.util.spec_from_file_location("bench_common", BENCH_COMMON)
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    return common.PeakTensorBytes()


def training_peak(module, x) -> int:
    """Peak bytes of a training step beyond the `.grad` a training loop keeps."""
    module(x).square().sum().backward()  # allocates .grad
    with _peak_tensor_bytes() as tracker:
        module(x).square().sum().backward()
    return tracker.peak


@pytest.mark.parametrize("rule", ["heavy_ball", "nesterov"])
def test_the_peak_of_a_training_step_does_not_grow_with_depth(rule):
    # Each layer's parameter gradients reach .grad before the layer below is undone, as
    # in plain autograd, instead of all of them waiting for the end of backward.
    x = torch.randn(16, 6)
    shallow, plain_shallow = pair(rule, depth=8)
    deep, plain_deep = pair(rule, depth=64)
    assert training_peak(deep, x) <= 1.1 * training_peak(shallow, x)
    assert training_peak(plain_deep, x) > 3 * training_peak(plain_shallow, x)


def test_inference_and_no_grad_run_the_plain_loop():
    reversible, plain = pair("heavy_ball", depth=6)
    x = torch.randn(4, 6)
    with torch.no_grad():
        assert torch.equal(reversible(x), plain(x))
    assert torch.equal(reversible.eval()(x), plain.eval()(x))


def test_the_inverse_layer_undoes_the_layer():
    reversible, _ = (m.double() for m in pair("three_step", depth=5))
    slots = tuple(torch.randn(2, 6, dtype=torch.float64) for _ in range(3))
    with torch.no_grad():
        after = reversible._layer(3, slots)
        before = reversible._inverse_layer(3, after)
    for a, b in zip(before, slots):
        assert relative(a, b) < 1e-12


def test_batchnorm_running_statistics_move_once_per_step():
    text = """
network Conv{tag} {{
    state x
    param beta = 0.9
    block T = conv(hidden=4)
    layers 3
    {backward}
    update {{ x+ = x - 0.1*T(x) + beta*(x - x-) }}
}}
"""
    classes = optgen.loads(
        text.format(tag="Rev", backward="backward reversible")
        + text.format(tag="Plain", backward=""),
        "conv.opt",
    )
    torch.manual_seed(0)
    reversible, plain = classes["ConvRev"](4).double(), classes["ConvPlain"](4).double()
    plain.load_state_dict(reversible.state_dict())
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    _, grads = gradients(reversible, x)
    _, expected = gradients(plain, x)
    for name, g in grads.items():
        assert relative(g, expected[name]) < 1e-9, name
    for key, value in plain.state_dict().items():
        assert torch.allclose(reversible.state_dict()[key], value, rtol=0, atol=1e-12), key


# ---------------------------------------------------------------- the certificate
def test_the_certificate_holds_the_amplification_and_a_note():
    (cert,) = optgen.check_source(
        HEAVY_BALL.format(name="Hb", beta=0.9, depth=16, backward="backward reversible")
    )
    field = cert["reversible"]
    assert 1 < field["amplification"] < 1e3
    assert "blocks' contribution neglected" in field["note"]
    assert not [d for d in cert["diagnostics"] if "reversible" in d["message"]]
    (plain,) = optgen.check_source(HEAVY_BALL.format(name="Hb", beta=0.9, depth=16, backward=""))
    assert "reversible" not in plain


def test_the_amplification_grows_like_the_inverse_roots_over_the_depth():
    # heavy ball: M^-1 has the eigenvalues 1 and 1/beta, so errors grow like beta^-depth
    with pytest.warns(OptgenWarning, match="more than float32 carries"):
        (cert,) = optgen.check_source(
            HEAVY_BALL.format(name="Hb", beta=0.5, depth=32, backward="backward reversible")
        )
    assert 2**32 <= cert["reversible"]["amplification"] < 2**32 * 10


def test_the_compiler_warns_when_float32_cannot_carry_the_reconstruction(opt_file, tmp_path):
    path = opt_file(
        HEAVY_BALL.format(name="Hb", beta=0.5, depth=32, backward="backward reversible")
    )
    result = run_optgen("compile", str(path), "-o", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert f"{path}:8:5: warning: backward reversible: the rounding error" in result.stderr
    assert "more than float32 carries" in result.stderr
    assert (tmp_path / "out" / "hb.py").exists()


# ---------------------------------------------------------------- rules that cannot be undone
GD = """network Gd {
    state x
    block T = mlp()
    backward reversible
    update { x+ = x - T(x) }
}
"""
NESTEROV_K = """network Nk2 {
    state x, y
    init y = x
    param beta = k/(k + 3)
    block T = mlp()
    backward reversible
    update {
        x+ = y - 0.1*T(y)
        y = x+ + beta*(x+ - x)
    }
}
"""
ZERO_MOMENTUM_AT_FIRST_LAYER = """network Nk {
    state x
    param beta = k/(k + 3)
    block T = mlp()
    backward reversible
    update { x+ = x - T(x) + beta*(x - x-) }
}
"""
IMPLICIT = """network Prox {
    state x
    block T = mlp()
    backward reversible
    update { x+ = x - T(x+) }
}
"""
EQUILIBRIUM = """network Eq {
    state x
    block T = mlp()
    layers equilibrium
    backward reversible
    update { x+ = x - 0.5*T(x) + 0.5*(input - x) }
}
"""
NOT_REVERSIBLE = {
    "gd_has_no_lag": (
        GD,
        "network Gd is not reversible: x+ keeps no earlier iterate (no lag such as x-), so x,"
        " which block T reads, comes back from x+ only by solving an equation in T",
    ),
    "nesterov_without_momentum_at_the_first_layer": (
        NESTEROV_K,
        "network Nk2 is not reversible: the coefficients on its oldest slots (x, y) make the"
        " layer's recurrence matrix singular at layer k=0, so they cannot be recovered from"
        " the next layer's slots",
    ),
    "zero_coefficient_on_the_oldest_slot": (
        ZERO_MOMENTUM_AT_FIRST_LAYER,
        "network Nk is not reversible: the coefficient of its oldest slot x- in x+ is 0 at"
        " layer k=0, so x- cannot be recovered from the later iterates",
    ),
    "implicit_rule": (
        IMPLICIT,
        "backward reversible is for explicit rules: network Prox is implicit",
    ),
    "equilibrium_rule": (
        EQUILIBRIUM,
        "backward reversible is for explicit rules: network Eq is an equilibrium",
    ),
}


@pytest.mark.parametrize("name", sorted(NOT_REVERSIBLE))
def test_a_rule_that_cannot_be_undone_is_a_located_error(name, tmp_path):
    text, message = NOT_REVERSIBLE[name]
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "backward reversible" in row)
    with pytest.raises(optgen.OptgenError) as info:
        optgen.compile_source(text, "rule.opt")
    (diagnostic,) = info.value.diagnostics
    assert (diagnostic["line"], diagnostic["col"], diagnostic["message"]) == (line, 5, message)
    source = tmp_path / "rule.opt"
    source.write_text(text)
    result = run_optgen("compile", str(source), "-o", str(tmp_path / "out"))
    assert result.returncode == 1
    assert result.stderr.startswith(f"{source}:{line}:5: error: {message}\n")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_backward_reversible_on_an_explicit_rule_is_not_an_ignored_backward():
    text = HEAVY_BALL.format(name="Hb", beta=0.9, depth=4, backward="backward reversible")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        files = optgen.compile_source(text)
    assert not [w for w in caught if "no effect" in str(w.message)]
    with pytest.warns(OptgenWarning, match="'backward' has no effect"):
        optgen.compile_source(text.replace("backward reversible", "backward unroll"))
    assert "_reversible_layers(self, (x, x_prev))" in files["hb.py"]
    assert "def _inverse_layer(self, k: int" in files["hb.py"]
    assert "_solve_inverse(self," not in files["hb.py"]  # exact: no solve


# ---------------------------------------------------------------- reconstruction by a solve
def nesterov_text(name="Nest", depth=16, t=0.1, backward="backward reversible") -> str:
    text = NESTEROV_RULE.format(name=name, beta=0.9, depth=depth, backward=backward)
    return text.replace("param t = 0.1", f"param t = {t}")


def test_nesterov_rebuilds_y_by_a_fixed_point_solve_and_x_exactly():
    with pytest.warns(OptgenWarning, match=r"converges only when t\*Lip\(T\) < 1"):
        (cert,) = optgen.check_source(nesterov_text())
    field = cert["reversible"]
    assert field["reconstruction"] == {"x": "exact", "y": "fixed-point solve"}
    (solve,) = field["solves"]
    assert solve == {
        "block": "T",
        "argument": "y",
        "iteration": "y <- x+ + t*T(y)",
        "start": "x+",
        "condition": "t*Lip(T) < 1",
    }
    assert "converges when t*Lip(T) < 1" in field["note"]


def test_an_exact_inverse_has_no_solve_and_no_warning():
    text = HEAVY_BALL.format(name="Hb", beta=0.9, depth=16, backward="backward reversible")
    with warnings.catch_warnings():
        warnings.simplefilter("error", OptgenWarning)
        (cert,) = optgen.check_source(text)
    assert cert["reversible"]["reconstruction"] == {"x": "exact", "x-": "exact"}
    assert "solves" not in cert["reversible"]


def test_the_compiler_warns_that_a_solve_needs_a_contraction(opt_file, tmp_path):
    path = opt_file(nesterov_text())
    result = run_optgen("compile", str(path), "-o", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert (
        f"{path}:9:5: warning: backward reversible: network Nest rebuilds y, which block T"
        " reads, by the fixed-point iteration y <- x+ + t*T(y), which converges only when"
        " t*Lip(T) < 1"
    ) in result.stderr
    module = (tmp_path / "out" / "nest.py").read_text()
    assert "y_solved = _solve_inverse(self, y_map, x)" in module


def test_the_nesterov_inverse_layer_undoes_the_layer():
    reversible, _ = (m.double() for m in pair("nesterov", depth=4))
    slots = tuple(torch.randn(3, 6, dtype=torch.float64) for _ in range(2))
    with torch.no_grad():
        after = reversible._layer(2, slots)
        before = reversible._inverse_layer(2, after)
    for a, b in zip(before, slots):
        assert relative(a, b) < 1e-12


def test_a_solve_that_does_not_converge_warns_once_at_run_time():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptgenWarning)
        classes = optgen.loads(nesterov_text(name="Big", depth=3, t=50.0), "big.opt")
    torch.manual_seed(0)
    module = classes["Big"](6).double()
    x = torch.randn(4, 6, dtype=torch.float64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            module(x).square().sum().backward()
    missed = [w for w in caught if "fixed-point reconstruction stopped" in str(w.message)]
    assert len(missed) == 1
    assert issubclass(missed[0].category, RuntimeWarning)


COUPLED = """
network {name} {{
    state x, y
    init y = x
    param beta = 0.8
    block T = mlp(hidden=2*dim)
    block U = mlp(hidden=dim)
    layers 8
    {backward}
    update {{
        x+ = y - 0.05*T(y) - 0.05*U(x + y)
        y = x+ + beta*(x+ - x)
    }}
}}
"""


def test_coupled_block_arguments_are_solved_together():
    source = COUPLED.format(name="Rev", backward="backward reversible") + COUPLED.format(
        name="Plain", backward=""
    )
    with pytest.warns(OptgenWarning, match="converges only when") as caught:
        classes = optgen.loads(source, "coupled.opt")
    assert len([w for w in caught if "fixed-point iteration" in str(w.message)]) == 2
    solves = classes["Rev"].CERTIFICATE["reversible"]["solves"]
    assert [s["argument"] for s in solves] == ["y", "x + y"]
    assert solves[0]["iteration"] == "y <- x+ + 1/20*T(y) + 1/20*U(x + y)"
    assert solves[0]["condition"] == "1/20*Lip(T) + 1/20*Lip(U) < 1"
    torch.manual_seed(0)
    reversible, plain = classes["Rev"](6).double(), classes["Plain"](6).double()
    plain.load_state_dict(reversible.state_dict())
    x = torch.randn(5, 6, dtype=torch.float64)
    _, grads = gradients(reversible, x)
    _, expected = gradients(plain, x)
    for name, g in grads.items():
        assert relative(g, expected[name]) < 1e-10, name


# ---------------------------------------------------------------- cost and depth at run time
@pytest.mark.parametrize("rule", ["heavy_ball", "momentum"])
def test_backward_evaluates_an_exact_rules_block_once_per_layer(rule):
    # Heavy ball's inverse evaluates T at the x it rebuilds (a momentum ResNet's at
    # x = x+ - v+), the call the layer makes: backward keeps that output for the layer's
    # recompute instead of running T twice.
    reversible, plain = pair(rule, depth=6)
    calls = []
    for block in reversible.blocks["T"]:
        block.register_forward_hook(lambda *_: calls.append(1))
    x = torch.randn(4, 6)
    out = reversible(x)
    assert len(calls) == 6
    out.square().sum().backward()
    assert len(calls) == 12  # forward, then one call a layer in backward (not two)


def test_a_deeper_module_than_declared_warns_when_float32_cannot_carry_it():
    text = HEAVY_BALL.format(name="Hb", beta=0.9, depth=8, backward="backward reversible")
    (cls,) = optgen.loads(text, "hb.opt").values()
    growth = cls.CERTIFICATE["reversible"]["growth"]
    assert growth == pytest.approx(1 / 0.9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cls(6), cls(6, depth=4), cls(6, depth=32)  # the compiler's check covers these
    with pytest.warns(RuntimeWarning, match=r"Hb\(depth=128\).*more than float32 carries"):
        cls(6, depth=128)
    # The estimate is the compiler's figure at that depth, within a factor of 2.
    deep = HEAVY_BALL.format(name="Hb", beta=0.9, depth=128, backward="backward reversible")
    with pytest.warns(OptgenWarning):
        (cert,) = optgen.check_source(deep)
    estimate = cls.CERTIFICATE["reversible"]["amplification"] * growth ** (128 - 8)
    assert 0.5 < estimate / cert["reversible"]["amplification"] < 2


def test_a_second_order_gradient_through_backward_is_an_error_not_zero():
    reversible, _ = pair("heavy_ball", depth=3)
    x = torch.randn(4, 6, requires_grad=True)
    (grad,) = torch.autograd.grad(reversible(x).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        grad.sum().backward()


def test_the_runtime_checks_depth_against_the_compilers_float32_limit():
    # The generated module cannot import optgen: its copy of the limit must stay equal.
    from optgen.analysis import reversible as analysis

    text = HEAVY_BALL.format(name="Hb", beta=0.9, depth=4, backward="backward reversible")
    (cls,) = optgen.loads(text, "hb.opt").values()
    namespace = __import__("sys").modules[cls.__module__]
    assert namespace._FLOAT32_EPS == analysis.FLOAT32_EPS
    assert namespace._FLOAT32_ERROR_LIMIT == analysis.FLOAT32_ERROR_LIMIT
