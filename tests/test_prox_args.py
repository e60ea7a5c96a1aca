"""Learnable prox arguments: the threshold of `softshrink(e, thr)` and the bounds of
`clamp(e, lo, hi)` may hold learnable params, scalar or per channel (language.md
section 11, second bullet; issue 14, point 3)."""

import warnings

import pytest
import torch
from conftest import assert_generated_tests_pass, run_optgen
from torch.func import functional_call

import optgen
from optgen.api import frontend
from optgen.backend.lower import lower

DIM = 4


def soft(z, thr):
    return torch.sign(z) * torch.clamp(z.abs() - thr, min=0)


def build(text: str, stem: str = "prox"):
    namespace: dict = {}
    files = optgen.compile_source(text, f"{stem}.opt")
    (source,) = [text for name, text in files.items() if not name.startswith("test_")]
    exec(compile(source, f"{stem}.py", "exec"), namespace)
    return source[source.index("def forward(self, x") :], namespace


def shrink_rule(options: str = "learnable positive", block: str = "mlp(hidden=2*dim)") -> str:
    return f"""
network Shrink {{
    state x
    param t = 0.5
    param lam = 0.2 {options}
    block T = {block}
    layers 3
    update {{ x+ = softshrink(x - t*T(x), t*lam) }}
}}
"""


def run_shrink(module, x, lam):
    for k in range(module.depth):
        x = soft(x - 0.5 * module.blocks["T"][k](x), 0.5 * lam(k))
    return x


def test_a_learnable_threshold_lowers_to_a_tensor_shrink():
    forward, namespace = build(shrink_rule())
    assert "F.softshrink" not in forward  # F.softshrink takes a float threshold only
    assert "softshrink_in - torch.clamp(softshrink_in, -lam_t, lam_t)" in forward
    torch.manual_seed(0)
    module = namespace["Shrink"](DIM).double()
    module.set_params(lam=0.7)
    x = 2 * torch.randn(5, DIM, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(
            module(x), run_shrink(module, x, lambda k: 0.7), rtol=1e-12, atol=1e-12
        )


def test_a_fixed_threshold_keeps_f_softshrink():
    forward, _ = build(shrink_rule(options=""))
    assert "F.softshrink(softshrink_in, lam_t)" in forward or "F.softshrink(" in forward
    assert "torch.clamp" not in forward
    (net,) = frontend(shrink_rule(options=""), "rule.opt").networks
    (learned,) = frontend(shrink_rule(), "rule.opt").networks
    # One kernel for the fixed threshold, two (clamp, subtract) for a tensor one.
    assert lower(learned).kernels_per_layer == lower(net).kernels_per_layer + 1


@pytest.mark.parametrize(
    "block, shape, channel",
    [
        ("mlp(hidden=2*dim)", (5, DIM), lambda v: v),
        ("conv(hidden=dim)", (2, DIM, 3, 3), lambda v: v[:, None, None]),
        ("transformer(heads=2)", (2, 3, DIM), lambda v: v),
    ],
    ids=["mlp", "conv", "transformer"],
)
def test_a_per_layer_per_channel_threshold_on_every_layout(block, shape, channel):
    text = shrink_rule("learnable positive per_layer per_channel", block)
    _, namespace = build(text)
    torch.manual_seed(0)
    module = namespace["Shrink"](DIM).double()
    lam = torch.linspace(0.1, 1.2, 3 * DIM, dtype=torch.float64).reshape(3, DIM)
    module.set_params(lam=lam)
    assert module.params()["lam"].shape == (3, DIM)
    x = 2 * torch.randn(*shape, dtype=torch.float64)
    with torch.no_grad():
        expected = run_shrink(module, x, lambda k: channel(lam[k]))
        torch.testing.assert_close(module(x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("options", ["learnable positive", "learnable positive per_channel"])
def test_gradcheck_of_the_threshold(options):
    _, namespace = build(shrink_rule(options))
    torch.manual_seed(0)
    module = namespace["Shrink"](DIM).double()
    x = 2 * torch.randn(5, DIM, dtype=torch.float64)
    raw = module.lam_raw.detach().clone().requires_grad_()

    def output(lam_raw):
        return functional_call(module, {"lam_raw": lam_raw}, (x,))

    assert torch.autograd.gradcheck(output, (raw,), eps=1e-6, atol=1e-5)
    # And the threshold does take a gradient in the module itself.
    module(x).sum().backward()
    assert module.lam_raw.grad is not None and module.lam_raw.grad.abs().sum() > 0


CLAMP = """
network Box {{
    state x
    param low = -0.5 {lo}
    param high = 0.5 {up}
    block T = mlp(hidden=2*dim)
    layers 2
    update {{ x+ = clamp(x - T(x), low, high) }}
}}
"""


@pytest.mark.parametrize(
    "lo, up, code",
    [
        ("learnable", "learnable", "torch.clamp(clamp_in, low, high)"),
        ("learnable per_channel", "", "torch.clamp(clamp_in, min=low).clamp(max=high)"),
        ("", "learnable in (0, 1)", "torch.clamp(clamp_in, min=low).clamp(max=high)"),
    ],
    ids=["both", "lower", "upper"],
)
def test_learnable_clamp_bounds(lo, up, code):
    forward, namespace = build(CLAMP.format(lo=lo, up=up), "box")
    assert code in forward  # torch.clamp takes two numbers or two tensors
    torch.manual_seed(0)
    module = namespace["Box"](DIM).double()
    x = torch.randn(5, DIM, dtype=torch.float64)
    values = module.params()
    expected = x
    for k in range(2):
        expected = torch.clamp(expected - module.blocks["T"][k](expected), -0.5, 0.5)
    with torch.no_grad():
        torch.testing.assert_close(module(x), expected, rtol=1e-12, atol=1e-12)
    learnable = [name for name, o in (("low", lo), ("high", up)) if o]
    raws = {name: module.LEARNABLE_PARAMS[name].attr for name in learnable}
    starts = [getattr(module, attr).detach().clone().requires_grad_() for attr in raws.values()]

    def output(*bounds):
        return functional_call(module, dict(zip(raws.values(), bounds)), (x,))

    assert torch.autograd.gradcheck(output, tuple(starts), eps=1e-6, atol=1e-5)
    assert set(values) == {"low", "high"}


def test_the_generated_tests_pass_with_learnable_prox_arguments(tmp_path):
    sources = {
        "shrink.opt": shrink_rule("learnable positive per_layer per_channel"),
        "shrink_conv.opt": shrink_rule(
            "learnable positive per_channel", "conv(hidden=dim)"
        ).replace("Shrink", "ShrinkConv"),
        "box.opt": CLAMP.format(lo="learnable", up="learnable per_channel"),
    }
    for name, text in sources.items():
        (tmp_path / name).write_text(text)
    out = tmp_path / "out"
    result = run_optgen("compile", *sorted(str(tmp_path / n) for n in sources), "-o", str(out))
    assert result.returncode == 0, result.stderr
    # A param read only by a threshold reaches the output: no "never reaches" warning.
    assert "never reaches" not in result.stderr
    assert_generated_tests_pass(out, tmp_path)


def test_a_threshold_that_training_may_make_negative_is_a_warning():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        optgen.compile_source(shrink_rule("learnable"), "rule.opt")
    messages = [str(w.message) for w in caught]
    assert any(
        "rule.opt:8:42: warning: the threshold of softshrink holds the learnable lam; "
        "training may make it negative" in m
        for m in messages
    ), messages
    for safe in ("learnable positive", "learnable in [0, 2)", "learnable in (0.1, 1)"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            optgen.compile_source(shrink_rule(safe), "rule.opt")
        assert not [w for w in caught if "threshold" in str(w.message)], safe


# name: (source, line, col, message)
ERRORS = {
    "tensor_threshold": (
        "network A {\n    state x\n    block T = mlp()\n"
        "    update { x+ = softshrink(x - T(x), x) }\n}\n",
        4,
        40,
        "the extra arguments of softshrink must be scalars, not a tensor expression",
    ),
    "tensor_clamp_bound": (
        "network A {\n    state x\n    param low = -1 learnable\n    block T = mlp()\n"
        "    update { x+ = clamp(x - T(x), low, T(x)) }\n}\n",
        5,
        40,
        "the extra arguments of clamp must be scalars, not a tensor expression",
    ),
    "learnable_threshold_starts_negative": (
        "network A {\n    state x\n    param lam = -0.1 learnable\n    block T = mlp()\n"
        "    update { x+ = softshrink(x - T(x), lam) }\n}\n",
        5,
        40,
        "the threshold of softshrink is -0.1; it must be >= 0",
    ),
    "learnable_clamp_bounds_start_out_of_order": (
        "network A {\n    state x\n    param low = 1 learnable\n    block T = mlp()\n"
        "    update { x+ = clamp(x - T(x), low, -1) }\n}\n",
        5,
        19,
        "clamp's lower bound 1 is above its upper bound -1",
    ),
}


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_misuse_is_a_located_error(name):
    text, line, col, message = ERRORS[name]
    with pytest.raises(optgen.OptgenError) as info:
        optgen.compile_source(text, "rule.opt")
    (diagnostic,) = info.value.diagnostics
    assert (diagnostic["line"], diagnostic["col"], diagnostic["message"]) == (line, col, message)


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_the_cli_exits_1_at_file_line_col_and_writes_nothing(name, tmp_path):
    text, line, col, message = ERRORS[name]
    source = tmp_path / "rule.opt"
    source.write_text(text)
    out = tmp_path / "out"
    result = run_optgen("compile", str(source), "-o", str(out))
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == f"{source}:{line}:{col}: error: {message}"
    assert not out.exists() or not any(out.iterdir())


def test_bounds_named_lo_and_hi_are_free_names():
    # `lo` and `hi` are attributes of the runtime's param descriptions, not of the module.
    text = """
network Named {
    state x
    param lo = -0.5 learnable
    param hi = 0.5 learnable
    block T = mlp(hidden=2*dim)
    layers 2
    update { x+ = clamp(x - T(x), lo, hi) }
}
"""
    forward, namespace = build(text, "named")
    assert "torch.clamp(clamp_in, lo, hi)" in forward
    module = namespace["Named"](DIM)
    module.set_params(lo=-0.25, hi=0.75)
    assert module.params()["lo"].item() == -0.25 and module.params()["hi"].item() == 0.75
    out = module(10 * torch.randn(5, DIM))
    assert out.min() >= -0.25 and out.max() <= 0.75
