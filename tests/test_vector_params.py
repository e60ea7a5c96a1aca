"""Vector params: `per_channel` holds one value per channel of the block layout, broadcast
along the other axes; `per_layer per_channel` one per layer and channel (language.md
section 10; issue 14, point 1)."""

import pytest
import torch
from conftest import assert_generated_tests_pass, run_optgen
from torch.func import functional_call

import optgen
from optgen.api import frontend

DIM = 4

# layout: (block declaration, input shape, how a [dim] value lines up with the input)
LAYOUTS = {
    "mlp": ("mlp(hidden=2*dim)", (3, DIM), lambda v: v),
    "conv": ("conv(hidden=dim)", (2, DIM, 3, 3), lambda v: v[:, None, None]),
    "convnext": ("convnext(kernel=3)", (2, DIM, 3, 3), lambda v: v[:, None, None]),
    "transformer": ("transformer(heads=2)", (2, 3, DIM), lambda v: v),
}


def rule(block: str, name: str = "Channels", layers: int = 3) -> str:
    return f"""
network {name} {{
    state x
    param t = 0.1 learnable positive per_channel
    param beta = 0.3 learnable in (0, 1) per_layer per_channel
    param c = 0.5
    block T = {block}
    layers {layers}
    update {{ x+ = x - t*T(x) + beta*c*(x - x-) }}
}}
"""


def build(text: str, stem: str = "channels"):
    namespace: dict = {}
    source = optgen.compile_source(text, f"{stem}.opt")[f"{stem}.py"]
    exec(compile(source, f"{stem}.py", "exec"), namespace)
    return source, namespace


def by_hand(module, x, channel):
    """The rule written out, with the values params() reports."""
    values = module.params()
    t, beta = channel(values["t"]), values["beta"]
    x_prev = x
    for k in range(module.depth):
        x_next = x - t * module.blocks["T"][k](x) + channel(beta[k]) * 0.5 * (x - x_prev)
        x_prev, x = x, x_next
    return x


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_one_value_per_channel_broadcast_along_the_layout(layout):
    block, shape, channel = LAYOUTS[layout]
    _, namespace = build(rule(block))
    torch.manual_seed(0)
    module = namespace["Channels"](DIM).double()
    assert module.t_raw.shape == (DIM,) and module.beta_raw.shape == (3, DIM)
    values = module.params()
    assert values["t"].shape == (DIM,) and values["beta"].shape == (3, DIM)
    torch.testing.assert_close(values["t"], torch.full((DIM,), 0.1, dtype=torch.float64))
    # Different channels take different values: a wrong axis would not match.
    module.set_params(
        t=torch.tensor([0.1, 0.2, 0.3, 0.4]),
        beta=torch.linspace(0.1, 0.9, 3 * DIM).reshape(3, DIM),
    )
    x = torch.randn(*shape, dtype=torch.float64)
    with torch.no_grad():
        out = module(x)
        assert out.shape == x.shape
        torch.testing.assert_close(out, by_hand(module, x, channel), rtol=1e-12, atol=1e-12)


def test_the_dim_given_to_the_constructor_sets_the_shape():
    _, namespace = build(rule("mlp(hidden=2*dim)"))
    Channels = namespace["Channels"]
    assert Channels(3).t_raw.shape == (3,)
    assert Channels(7, depth=5).beta_raw.shape == (5, 7)
    assert Channels(7, depth=5)(torch.randn(2, 7)).shape == (2, 7)


def test_the_image_layout_views_the_value_as_dim_1_1():
    source, _ = build(rule("conv(hidden=dim)"))
    assert "t = F.softplus(self.t_raw[..., None, None])" in source
    assert "beta = torch.sigmoid(self.beta_raw[..., None, None])" in source
    vector, _ = build(rule("mlp(hidden=dim)"))
    assert "t = F.softplus(self.t_raw)" in vector


def test_the_constraint_holds_for_every_channel_whatever_the_raw_values():
    _, namespace = build(rule("mlp(hidden=2*dim)"))
    module = namespace["Channels"](DIM)
    with torch.no_grad():
        module.t_raw.copy_(torch.tensor([-30.0, -1.0, 0.0, 30.0]))
        module.beta_raw.copy_(torch.linspace(-30, 30, 3 * DIM).reshape(3, DIM))
    values = module.params()
    assert (values["t"] > 0).all()
    assert ((values["beta"] >= 0) & (values["beta"] <= 1)).all()


def test_set_params_takes_one_value_or_a_tensor_of_the_shape_and_checks_each_entry():
    _, namespace = build(rule("mlp(hidden=2*dim)"))
    module = namespace["Channels"](DIM).double()
    module.set_params(t=0.25, beta=0.5)  # one value for every entry
    torch.testing.assert_close(module.params()["t"], torch.full((DIM,), 0.25, dtype=torch.float64))
    torch.testing.assert_close(module.params()["beta"], torch.full((3, DIM), 0.5).double())
    module.set_params(t=[1.0, 2.0, 3.0, 4.0])
    assert module.params()["t"].tolist() == pytest.approx([1.0, 2.0, 3.0, 4.0], rel=1e-14)
    before = {name: value.clone() for name, value in module.params().items()}
    bad = [
        ({"t": [1.0, 2.0]}, r"t takes 4 value\(s\) \(one, or shape \[4\]\), got shape \[2\]"),
        ({"beta": torch.full((DIM,), 0.5)}, r"beta takes 12 value\(s\) \(one, or shape \[3, 4\]\)"),
        ({"t": [1.0, -2.0, 3.0, 4.0]}, r"t must be > 0 \(0 < t\)"),
        ({"t": 1.0, "beta": [[0.5] * DIM] * 2 + [[0.5, 0.5, 1.5, 0.5]]}, "beta must lie in"),
    ]
    for values, message in bad:
        with pytest.raises(ValueError, match=message):
            module.set_params(**values)
    # Nothing was set: every value is checked before any is.
    for name, value in module.params().items():
        torch.testing.assert_close(value, before[name])


def test_gradcheck_of_the_vector_params():
    _, namespace = build(rule("conv(hidden=dim)", layers=2))
    torch.manual_seed(0)
    module = namespace["Channels"](DIM).double()
    x = torch.randn(2, DIM, 3, 3, dtype=torch.float64)

    def output(t_raw, beta_raw):
        return functional_call(module, {"t_raw": t_raw, "beta_raw": beta_raw}, (x,))

    raws = (
        torch.randn(DIM, dtype=torch.float64).requires_grad_(),
        torch.randn(2, DIM, dtype=torch.float64).requires_grad_(),
    )
    assert torch.autograd.gradcheck(output, raws, eps=1e-6, atol=1e-5)


def test_a_tensor_coefficient_lowers_to_addcmul_mul_and_a_tensor_lerp_weight():
    text = """
network Fused {
    state x
    param t = 0.1 learnable positive per_channel
    param w = 0.5 learnable in (0, 1) per_channel
    block T = mlp(hidden=2*dim)
    layers 2
    update {
        y = t*x - 2*t*T(x)
        x+ = (1 - w)*y + w*T(y)
    }
}
"""
    source, namespace = build(text, "fused")
    forward = source[source.index("def forward(self, x") :]
    assert "alpha=" not in forward  # add's alpha takes a Python number only
    assert "y = torch.mul(T_x, coef)" in forward and "y.addcmul_(t, x)" in forward
    assert "torch.lerp(" in forward and ", w)" in forward  # lerp broadcasts a tensor weight
    torch.manual_seed(0)
    module = namespace["Fused"](DIM).double()
    module.set_params(t=[0.1, 0.2, 0.3, 0.4], w=[0.2, 0.4, 0.6, 0.8])
    values = module.params()
    t, w = values["t"], values["w"]
    x = torch.randn(3, DIM, dtype=torch.float64)
    expected = x
    for k in range(2):
        T = module.blocks["T"][k]
        y = t * expected - 2 * t * T(expected)
        expected = (1 - w) * y + w * T(y)
    with torch.no_grad():
        torch.testing.assert_close(module(x), expected.detach(), rtol=1e-12, atol=1e-12)


def test_the_certificate_reads_the_rule_channel_by_channel():
    (vector,) = optgen.check_source(rule("mlp(hidden=dim)"), "rule.opt")
    scalar_text = rule("mlp(hidden=dim)").replace(" per_channel", "")
    (scalar,) = optgen.check_source(scalar_text, "rule.opt")
    # Reported like learnable scalars, at their start value.
    assert vector["learnable"] == ["t", "beta"]
    for key in ("rho", "roots", "zero_stable", "consistent", "step", "conditions", "universal"):
        assert vector[key] == scalar[key], key
    assert any(
        note.startswith("per-channel t, beta: the rule is read channel by channel")
        for note in vector["notes"]
    )
    assert not any("per-channel" in note for note in scalar["notes"])


def test_the_generated_tests_pass_for_every_layout(tmp_path):
    sources = {
        f"channels_{layout}.opt": rule(block, f"Channels{layout.capitalize()}")
        for layout, (block, _, _) in LAYOUTS.items()
    }
    sources["channels_deq.opt"] = """
network ChannelsDeq {
    state x
    param t = 0.5 learnable in (0, 1) per_channel
    block T = mlp(hidden=dim)
    layers equilibrium
    update { x+ = x - t*T(x) + t*(input - x) }
}
"""
    sources["channels_ppm.opt"] = """
network ChannelsPpm {
    state x
    param t = 0.5 learnable in (0, 1) per_channel
    block T = mlp(hidden=dim)
    layers 2
    update { x+ = x - t*T(x+) }
}
"""
    out = tmp_path / "out"
    for name, text in sources.items():
        (tmp_path / name).write_text(text)
    result = run_optgen("compile", *sorted(str(tmp_path / n) for n in sources), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert_generated_tests_pass(out, tmp_path)


def test_a_custom_block_of_a_declared_layout_takes_per_channel_params():
    text = """
network Custom {
    state x
    param t = 0.1 learnable positive per_channel
    block T = custom("torch.nn:Identity", layout=image)
    update { x+ = x - t*T(x) }
}
"""
    source = optgen.compile_source(text, "custom.opt")["custom.py"]
    assert "t = F.softplus(self.t_raw[..., None, None])" in source


# name: (source, line, col, message)
ERRORS = {
    "per_channel_twice": (
        "network A {\n    state x\n    param t = 0.1 learnable per_channel per_channel\n"
        "    block T = mlp()\n    update { x+ = x - t*T(x) }\n}\n",
        3,
        41,
        "param t: 'per_channel' is given twice",
    ),
    "per_channel_on_a_fixed_param": (
        "network A {\n    state x\n    param t = 0.1 per_channel\n"
        "    block T = mlp()\n    update { x+ = x - t*T(x) }\n}\n",
        3,
        19,
        "per_channel only applies to learnable params; 't' is fixed",
    ),
    "per_channel_with_a_custom_block_of_unknown_layout": (
        "network A {\n    state x\n    param t = 0.1 learnable per_channel\n"
        '    block T = custom("torch.nn:Identity")\n    update { x+ = x - t*T(x) }\n}\n',
        3,
        29,
        "per_channel param t: the channel axis of custom block T is unknown, since it "
        "declares no layout",
    ),
    "per_channel_param_inside_a_sum": (
        "network A {\n    state x\n    param t = 0.1 learnable per_channel\n"
        "    block T = mlp()\n    update {\n        g = T(x)\n"
        "        x+ = x[0] - sum(i = 0..k, t*g[i])\n    }\n}\n",
        7,
        35,
        "the coefficients inside a sum must be fixed, not learnable",
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


def test_the_param_is_a_per_channel_param_of_the_ir():
    (net,) = frontend(rule("mlp()"), "rule.opt").networks
    assert [(p.name, p.per_channel, p.per_layer) for p in net.params] == [
        ("t", True, False),
        ("beta", True, True),
        ("c", False, False),
    ]


def test_each_stage_of_a_model_takes_its_own_channels():
    text = """
network Hb {
    state x
    param t = 0.5 learnable positive per_channel
    param beta = 0.5
    block T = conv(hidden=dim)
    layers 2
    update { x+ = x - t*T(x) + beta*(x - x-) }
}
model Small {
    input [3, 8, 8]
    stem conv(out=4, kernel=3)
    stage Hb(dim=4, depth=2)
    down conv(out=8, stride=2)
    stage Hb(dim=8, depth=3)
    head classifier(classes=10)
}
"""
    Small = optgen.loads(text, "small.opt")["Small"]
    model = Small()
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters() if n.endswith("t_raw")}
    assert shapes == {"stages.0.t_raw": (4,), "stages.1.t_raw": (8,)}
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 10)


def test_a_vector_param_in_init_and_in_a_block_argument():
    text = """
network InitArg {
    state x, y
    init y = t*x
    param t = 0.5 learnable positive per_channel
    block T = conv(hidden=dim)
    layers 2
    update {
        x+ = y - T(t*y)
        y = x+ + 0.5*(x+ - x)
    }
    output x
}
"""
    InitArg = optgen.loads(text, "init_arg.opt")["InitArg"]
    torch.manual_seed(0)
    module = InitArg(DIM).double()
    module.set_params(t=[0.1, 0.2, 0.3, 0.4])
    t = module.params()["t"][:, None, None]
    x = torch.randn(2, DIM, 3, 3, dtype=torch.float64)
    state, y = x, t * x
    for k in range(2):
        x_next = y - module.blocks["T"][k](t * y)
        y = x_next + 0.5 * (x_next - state)
        state = x_next
    with torch.no_grad():
        torch.testing.assert_close(module(x), state, rtol=1e-12, atol=1e-12)
