"""`checkpoint N` (language.md section 15): layers recomputed in groups of N in backward.

Gradients equal those of the plain loop, a training step saves fewer bytes than without,
no more than with every block checkpointed by hand, the constructor overrides N, and
the declaration's mistakes are located errors.
"""

import pytest
import torch
from conftest import run_optgen
from torch import nn

import optgen

NESTEROV = """
network {name} {{
    state x, y
    init y = x
    param t = 1.0 learnable positive
    param beta = 0.9 in [0, 1)
    block T = mlp(hidden=2*dim)
    layers 16
    {checkpoint}
    update {{
        x+ = y - t*T(y)
        y = x+ + beta*(x+ - x)
    }}
    output x
}}
"""
GD = """
network {name} {{
    state x
    block T = mlp(hidden=2*dim)
    layers 16
    {checkpoint}
    update {{ x+ = x - T(x) }}
}}
"""
RULES = {"nesterov": NESTEROV, "gd": GD}


def pair(rule: str, every: int = 2):
    text = RULES[rule]
    source = text.format(name="Grouped", checkpoint=f"checkpoint {every}")
    source += text.format(name="Plain", checkpoint="")
    classes = optgen.loads(source, f"{rule}.opt")
    torch.manual_seed(0)
    grouped = classes["Grouped"](8)
    plain = classes["Plain"](8)
    plain.load_state_dict(grouped.state_dict())
    return grouped, plain


def gradients(module, x):
    x = x.clone().requires_grad_()
    out = module(x)
    found = torch.autograd.grad(out.square().sum(), [x, *module.parameters()])
    return out.detach(), found


def saved_bytes(module, x) -> int:
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = module(x)
    out.square().sum().backward()
    return total


class _CheckpointedBlock(nn.Module):
    """A block checkpointed by hand: what `checkpoint 1` must match or beat."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, z):
        return torch.utils.checkpoint.checkpoint(self.block, z, use_reentrant=False)


@pytest.mark.parametrize("rule", sorted(RULES))
@pytest.mark.parametrize("every", [1, 3, 16])
def test_gradients_equal_the_plain_loop(rule, every):
    grouped, plain = (m.double() for m in pair(rule, every))
    x = torch.randn(4, 8, dtype=torch.float64)
    out, grads = gradients(grouped, x)
    expected_out, expected = gradients(plain, x)
    assert torch.equal(out, expected_out)
    for g, e in zip(grads, expected):
        assert torch.allclose(g, e, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_saved_bytes_fall_below_the_plain_loop_and_hand_checkpointed_blocks(rule):
    x = torch.randn(32, 8)
    every_layer, plain = pair(rule, every=1)
    by_hand, _ = pair(rule, every=1)
    by_hand.checkpoint = 0
    for k, block in enumerate(by_hand.blocks["T"]):
        by_hand.blocks["T"][k] = _CheckpointedBlock(block)
    groups_of_four, _ = pair(rule, every=4)
    assert saved_bytes(every_layer, x) <= saved_bytes(by_hand, x) < saved_bytes(plain, x)
    assert saved_bytes(groups_of_four, x) * 4 == saved_bytes(every_layer, x)


def test_the_constructor_overrides_the_declared_groups():
    grouped, plain = pair("nesterov", every=2)
    cls = type(grouped)
    x = torch.randn(8, 8)
    assert grouped.checkpoint == 2
    # Off, it saves what the plain loop saves, but for the learnable step's raw value,
    # which each `_layer` call reads again (4 bytes a layer).
    for off in (0, None):
        extra = saved_bytes(cls(8, checkpoint=off), x) - saved_bytes(plain, x)
        assert 0 <= extra <= 4 * grouped.depth
    assert saved_bytes(cls(8, checkpoint=8), x) * 4 == saved_bytes(cls(8, checkpoint=2), x)
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="checkpoint must be a number of layers"):
            cls(8, checkpoint=bad)


def test_no_grad_and_eval_run_the_plain_loop():
    grouped, plain = pair("gd", every=4)
    x = torch.randn(3, 8)
    with torch.no_grad():
        assert torch.equal(grouped(x), plain(x))
    assert saved_bytes(grouped, x) < saved_bytes(plain, x)


def test_batchnorm_running_statistics_move_once_per_step():
    text = """
network Conv{tag} {{
    state x
    block T = conv(hidden=4)
    layers 3
    {checkpoint}
    update {{ x+ = x - 0.1*T(x) }}
}}
"""
    classes = optgen.loads(
        text.format(tag="Ck", checkpoint="checkpoint 2") + text.format(tag="Plain", checkpoint=""),
        "conv.opt",
    )
    torch.manual_seed(0)
    grouped, plain = classes["ConvCk"](4).double(), classes["ConvPlain"](4).double()
    plain.load_state_dict(grouped.state_dict())
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    for module in (grouped, plain):
        module(x).square().sum().backward()
    for key, value in plain.state_dict().items():
        assert torch.allclose(grouped.state_dict()[key], value, rtol=0, atol=1e-12), key


def test_the_generated_forward_runs_its_layers_through_the_runtime():
    files = optgen.compile_source(GD.format(name="Gd", checkpoint="checkpoint 4"))
    code = files["gd.py"]
    assert "checkpoint: int | None = 4" in code
    assert "x, = _checkpointed_layers(self, (x,))" in code or (
        "(x,) = _checkpointed_layers(self, (x,))" in code
    )
    assert "def _layer(self, k: int, slots: tuple[Tensor, ...])" in code


BAD = {
    "zero": ("checkpoint 0", 5, 16, "checkpoint 0 must be a positive number of layers"),
    "negative": ("checkpoint -2", 5, 16, "checkpoint -2 must be a positive number of layers"),
    "fraction": ("checkpoint 1.5", 5, 16, "checkpoint takes a whole number of layers, not 1.5"),
    "implicit": (
        "checkpoint 2",
        5,
        5,
        "checkpoint is for explicit rules: network A is implicit",
    ),
    "with_reversible": (
        "checkpoint 2\n    backward reversible",
        5,
        5,
        "network A declares both checkpoint and backward reversible",
    ),
    "twice": (
        "checkpoint 2\n    checkpoint 3",
        6,
        5,
        "'checkpoint' is declared twice in network A",
    ),
}


def bad_source(name: str) -> str:
    decl = BAD[name][0]
    update = "x+ = x - T(x+)" if name == "implicit" else "x+ = x - T(x) + 0.5*(x - x-)"
    return (
        "network A {\n    state x\n    block T = mlp()\n    layers 4\n"
        f"    {decl}\n    update {{ {update} }}\n}}\n"
    )


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_checkpoint_is_a_located_error_and_writes_nothing(name, tmp_path):
    _, line, col, message = BAD[name]
    text = bad_source(name)
    with pytest.raises(optgen.OptgenError) as info:
        optgen.compile_source(text, "rule.opt")
    (diagnostic,) = info.value.diagnostics
    assert (diagnostic["line"], diagnostic["col"], diagnostic["message"]) == (line, col, message)
    source = tmp_path / "rule.opt"
    source.write_text(text)
    result = run_optgen("compile", str(source), "-o", str(tmp_path / "out"))
    assert result.returncode == 1
    assert result.stderr.startswith(f"{source}:{line}:{col}: error: {message}\n")
    assert not (tmp_path / "out").exists()


def test_a_name_checkpoint_stays_legal_inside_an_update():
    text = (
        "network A {\n    state x\n    block T = mlp()\n"
        "    update { checkpoint = T(x); x+ = x - checkpoint }\n}\n"
    )
    assert "a.py" in optgen.compile_source(text)
