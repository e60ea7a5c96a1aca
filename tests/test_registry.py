"""One registry of kinds: a new block kind is one entry, and enums where words were strings."""

import subprocess
import sys

import torch
from conftest import GENERATED

import optgen
from optgen.errors import Severity
from optgen.ir import NetworkKind
from optgen.kinds import blocks
from optgen.kinds.blocks import BLOCK_KINDS, Arg, ArgKind, BlockKind, Layout

SCALE_SOURCE = '''
class ScaleBlock(nn.Module):
    """A toy block: a learnable gain times a Linear map, then tanh."""

    def __init__(self, dim: int, width: int = 1) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(width))
        self.fc = nn.Linear(dim, dim)

    def forward(self, z: Tensor) -> Tensor:
        return torch.tanh(self.fc(z)) * self.gain.sum()
'''

TOY = """network Toy {
    state x
    param t = 0.5
    block T = scale(width=dim/2)
    layers 3
    update { x+ = x - t*T(x) }
}
"""


def toy_kind() -> BlockKind:
    return BlockKind(
        "scale",
        "ScaleBlock",
        "scale.py",
        Layout.VECTOR,
        {"width": Arg(ArgKind.INT, 1)},
        two_layer=lambda kind, args: (None, "scale: a toy, structure not declared"),
        doc="tanh(Linear) times a gain",
        source=SCALE_SOURCE,
    )


def test_a_toy_block_kind_touches_only_the_registry(monkeypatch, tmp_path):
    monkeypatch.setitem(BLOCK_KINDS, "scale", toy_kind())
    outputs = optgen.compile_source(TOY, "toy.opt")
    source = outputs["toy.py"]
    assert "class ScaleBlock(nn.Module):" in source
    assert "ScaleBlock(dim, width=dim // 2)" in source
    (cert,) = optgen.check_source(TOY, "toy.opt")
    assert "block T: scale: a toy, structure not declared" in cert["universal"]["reasons"]
    for name, text in outputs.items():
        (tmp_path / name).write_text(text)
    namespace: dict = {}
    exec(compile(source, "toy.py", "exec"), namespace)
    module = namespace["Toy"](6)
    assert module(torch.randn(2, 6)).shape == (2, 6)
    # The generated tests run without the registry entry: the file is standalone.
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert tests.returncode == 0, tests.stdout[-3000:]


def test_an_unknown_kind_lists_the_registry(monkeypatch):
    monkeypatch.setitem(BLOCK_KINDS, "scale", toy_kind())
    try:
        optgen.compile_source(TOY.replace("scale(", "scal("), "toy.opt")
    except optgen.OptgenError as err:
        assert err.diagnostics[0]["message"] == "unknown block kind 'scal'"
        assert err.diagnostics[0]["hint"] == "did you mean 'scale'?"
    else:  # pragma: no cover
        raise AssertionError("no error")


def test_layout_kind_and_severity_are_enums_that_read_as_their_words():
    (net,) = optgen.api.frontend(TOY.replace("scale(width=dim/2)", "mlp(hidden=dim)")).networks
    assert net.kind is NetworkKind.EXPLICIT and net.kind == "explicit"
    assert f"{net.kind}" == "explicit"
    assert Layout(net.layout) is Layout.VECTOR and Layout.VECTOR.shape == "[..., dim]"
    assert {Layout.IMAGE: 1}["image"] == 1  # one key for the word and the member
    assert str(Severity.WARNING) == "warning"
    assert BLOCK_KINDS["conv"].layout is Layout.IMAGE


def test_solver_and_backward_defaults_live_in_the_registry():
    assert blocks.solver_config(None) == {"name": "anderson", "m": 5, "max_iter": 50, "tol": 1e-4}
    solver = {"name": "fixed_point", "max_iter": 20, "tol": 1e-6}
    assert blocks.backward_config(None, solver) == {"name": "implicit", "max_iter": 20, "tol": 1e-6}
    ppm = (GENERATED / "ppm.py").read_text()
    assert 'self.backward = {"name": "implicit", "max_iter": 50, "tol": 0.0001}' in ppm


def test_a_block_that_cannot_be_built_at_this_width_names_itself_and_the_network():
    text = TOY.replace("scale(width=dim/2)", "mlp(hidden=3*dim/2)")
    namespace: dict = {}
    exec(compile(optgen.compile_source(text, "toy.opt")["toy.py"], "toy.py", "exec"), namespace)
    assert namespace["Toy"](4).blocks["T"][0].fc1.out_features == 6
    assert "MLP(dim, hidden=3 * dim // 2" in optgen.compile_source(text, "toy.opt")["toy.py"]
    try:
        namespace["Toy"](5)
    except ValueError as err:
        assert str(err) == (
            "Toy: block T = mlp(hidden=3*dim/2): hidden is not a whole number unless 2 "
            "divides 3*dim, got dim=5"
        )
    else:  # pragma: no cover
        raise AssertionError("no error")
    heads = TOY.replace("scale(width=dim/2)", "transformer(heads=3)")
    namespace = {}
    exec(compile(optgen.compile_source(heads, "toy.opt")["toy.py"], "toy.py", "exec"), namespace)
    try:
        namespace["Toy"](4)
    except ValueError as err:
        assert str(err) == (
            "Toy: block T = transformer(heads=3) needs dim divisible by heads = 3, got dim=4"
        )
    else:  # pragma: no cover
        raise AssertionError("no error")
