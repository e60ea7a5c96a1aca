"""One registry of kinds: a new block kind is one entry, and enums where words were strings."""

import subprocess
import sys

import torch
from conftest import GENERATED

import optgen
from optgen import ir
from optgen.errors import Severity
from optgen.ir import NetworkKind
from optgen.kinds import blocks
from optgen.kinds.blocks import BLOCK_KINDS, Arg, ArgKind, BlockKind, Layout
from optgen.kinds.calls import Call, Code
from optgen.kinds.parts import HEAD_KINDS, STEM_KINDS, TRANSITION_KINDS, PartKind, Role

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


TOY_STEM_SOURCE = '''
class ToyStem(nn.Module):
    """A toy stem: a 1x1 conv, then tanh."""

    def __init__(self, in_chans: int, out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chans, out, 1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(self.conv(x))
'''

TOY_DOWN_SOURCE = '''
class ToyDown(nn.Module):
    """A toy transition: max pooling by `factor`, then a 1x1 conv."""

    def __init__(self, dim: int, out: int, factor: int = 2) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(factor)
        self.conv = nn.Conv2d(dim, out, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.pool(x))
'''

TOY_MODEL = """network Gd {
    state x
    param t = 0.5
    block T = conv(hidden=dim)
    update { x+ = x - t*T(x) }
}

network Hb {
    state x
    param t = 0.5
    param beta = 0.5 in [0, 1)
    block T = conv(hidden=dim)
    update { x+ = x - t*T(x) + beta*(x - x-) }
}

model ToyNet {
    input [3, 24, 12]
    stem toy(out=8)
    stage Hb(dim=8, depth=2)
    down toy(out=16)
    stage Hb(dim=16, depth=1)
    down toy(out=16, factor=3) carry output
    stage Gd(dim=16, depth=1)
    head classifier(classes=5)
}
"""


def toy_parts(batched_slots: bool = True) -> tuple[PartKind, PartKind]:
    stem = PartKind(
        Role.STEM,
        "toy",
        "ToyStem",
        "",
        {"out": None},
        lambda args, ctx: Call("ToyStem", (Code(ctx.in_chans), args["out"])),
        weights=lambda args, channels: channels * args["out"],
        source=TOY_STEM_SOURCE,
    )
    down = PartKind(
        Role.TRANSITION,
        "down toy",
        "ToyDown",
        "",
        {"out": None, "factor": 2},
        lambda args, ctx: Call("ToyDown", (ctx.dim, args["out"]), (("factor", args["factor"]),)),
        divides=("factor",),
        shape=lambda args, spatial: tuple(n // args["factor"] for n in spatial),
        weights=lambda args, channels: channels * args["out"],
        batched_slots=batched_slots,
        source=TOY_DOWN_SOURCE,
    )
    return stem, down


def _register(monkeypatch, batched_slots: bool = True) -> None:
    stem, down = toy_parts(batched_slots)
    monkeypatch.setitem(STEM_KINDS, "toy", stem)
    monkeypatch.setitem(TRANSITION_KINDS, "down toy", down)


def test_the_layout_hint_names_the_stems_and_blocks_of_the_registry(monkeypatch):
    # The hint for a stage whose blocks take another layout than the stem gives is read
    # from the registry: a new image stem appears in it with no other change.
    _register(monkeypatch)
    mlp = "network Mlp {\n    state x\n    block T = mlp()\n    update { x+ = x - T(x) }\n}\n"
    text = mlp + TOY_MODEL.replace("stage Hb(dim=8, depth=2)", "stage Mlp(dim=8, depth=2)")
    try:
        optgen.api.frontend(text, "toy.opt")
    except optgen.OptgenError as err:
        hints = [d["hint"] for d in err.diagnostics]
    else:
        raise AssertionError("a vector stage after an image stem compiled")
    assert (
        "after a conv, patch or toy stem, a stage runs a network of conv or convnext blocks"
        in hints
    )


def test_a_toy_stem_and_transition_touch_only_the_registry(monkeypatch, tmp_path):
    _register(monkeypatch)
    (model,) = optgen.api.frontend(TOY_MODEL, "toy.opt").models
    assert model.stem == ir.Stem("toy", (("out", 8),), model.stem.span)
    assert [(t.kind, t.args) for t in model.transitions] == [
        ("down toy", (("out", 16), ("factor", 2))),
        ("down toy", (("out", 16), ("factor", 3))),
    ]
    assert model.shapes == ((8, 24, 12), (16, 12, 6), (16, 4, 2))
    outputs = optgen.compile_source(TOY_MODEL, "toy.opt")
    source = outputs["toy_net.py"]
    # The file copies the toy sources, and of the templates only the head it uses.
    assert source.count("class ToyStem(nn.Module):") == 1
    assert source.count("class ToyDown(nn.Module):") == 1
    assert "class ClassifierHead(nn.Module):" in source
    assert "class ConvStem" not in source and "class DownConv" not in source
    assert "self.stem = ToyStem(in_chans, 8)" in source
    assert "ToyDown(8, 16, factor=2)" in source and "ToyDown(16, 16, factor=3)" in source
    cat = "batched = self.transitions[0](torch.cat(slots))\n"
    assert cat in source
    namespace: dict = {}
    exec(compile(source, "toy_net.py", "exec"), namespace)
    net = namespace["ToyNet"]().eval()
    assert net(torch.randn(2, 3, 24, 12)).shape == (2, 5)
    for name, text in outputs.items():
        (tmp_path / name).write_text(text)
    # The generated tests run without the registry entries: the files are standalone.
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_toy_net.py"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert tests.returncode == 0, tests.stdout[-3000:]


def test_a_transition_may_carry_the_states_slot_by_slot(monkeypatch):
    _register(monkeypatch, batched_slots=False)
    source = optgen.compile_source(TOY_MODEL, "toy.opt")["toy_net.py"]
    assert "slots = tuple(self.transitions[0](slot) for slot in slots)" in source
    namespace: dict = {}
    exec(compile(source, "toy_net.py", "exec"), namespace)
    net = namespace["ToyNet"]().eval()
    x = torch.randn(2, 3, 24, 12)
    # Without a normalization, one batch of the slots and each slot alone agree.
    _register(monkeypatch)
    batched: dict = {}
    exec(compile(optgen.compile_source(TOY_MODEL, "toy.opt")["toy_net.py"], "b", "exec"), batched)
    other = batched["ToyNet"]().eval()
    other.load_state_dict(net.state_dict())
    torch.testing.assert_close(net(x), other(x))


def test_the_registry_checks_and_reports_the_toy_parts(monkeypatch):
    _register(monkeypatch)
    cases = {
        "stem toy(out=8)": ("stem tyo(out=8)", "unknown stem 'tyo'", "did you mean 'toy'?"),
        "down toy(out=16)": (
            "down tyo(out=16)",
            "unknown transition 'down tyo'",
            "did you mean 'down toy'?",
        ),
        "factor=3) carry": (
            "factor=5) carry",
            "factor=5 of down toy does not divide its input's height 12 and width 6",
            "use one that divides 12 and 6",
        ),
    }
    for old, (new, message, hint) in cases.items():
        try:
            optgen.compile_source(TOY_MODEL.replace(old, new), "toy.opt")
        except optgen.OptgenError as err:
            assert (err.diagnostics[0]["message"], err.diagnostics[0]["hint"]) == (message, hint)
        else:  # pragma: no cover
            raise AssertionError(f"no error for {new}")
    try:
        optgen.compile_source(TOY_MODEL.replace("stem toy", "stem spam"), "toy.opt")
    except optgen.OptgenError as err:
        assert err.diagnostics[0]["hint"] == "known: conv, patch, tokens, toy"
    else:  # pragma: no cover
        raise AssertionError("no error")


def test_every_part_of_the_registry_names_its_role_and_source():
    for role, kinds in ((Role.STEM, STEM_KINDS), (Role.TRANSITION, TRANSITION_KINDS)):
        for name, kind in kinds.items():
            assert kind.role is role and kind.name == name
            assert not kind.class_name or f"class {kind.class_name}(" in kind.source_text()
    assert HEAD_KINDS["classifier"].args == {"classes": None}
    assert TRANSITION_KINDS["identity"].runs is False


MEAN_HEAD_SOURCE = '''
class MeanHead(nn.Module):
    """A toy head: the spatial mean of each channel, times `scale`."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale

    def reset(self, num_classes: int) -> None:
        pass

    def forward(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        return x.mean(dim=(2, 3)) * self.scale
'''


def test_a_toy_head_is_one_entry_too(monkeypatch):
    _register(monkeypatch)
    head = PartKind(
        Role.HEAD,
        "mean",
        "MeanHead",
        "",
        {"scale": 1},
        lambda args, ctx: Call("MeanHead", (args["scale"],)),
        layout_in=None,
        source=MEAN_HEAD_SOURCE,
    )
    monkeypatch.setitem(HEAD_KINDS, "mean", head)
    text = TOY_MODEL.replace("head classifier(classes=5)", "head mean(scale=2)")
    (model,) = optgen.api.frontend(text, "toy.opt").models
    assert (model.head.kind, model.head.args, model.head.classes) == ("mean", (("scale", 2),), None)
    source = optgen.compile_source(text, "toy.opt")["toy_net.py"]
    assert "self.head = MeanHead(2)" in source and "class ClassifierHead" not in source
    namespace: dict = {}
    exec(compile(source, "toy_net.py", "exec"), namespace)
    assert namespace["ToyNet"]().eval()(torch.randn(2, 3, 24, 12)).shape == (2, 16)
    try:
        optgen.compile_source(text.replace("head mean", "head maen"), "toy.opt")
    except optgen.OptgenError as err:
        assert err.diagnostics[0]["message"] == "unknown head 'maen'"
        assert err.diagnostics[0]["hint"] == "did you mean 'mean'?"
    else:  # pragma: no cover
        raise AssertionError("no error")
