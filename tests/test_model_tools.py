"""Generated models in torch's tools (issue 25, points 2 and 3): every stage is entered
through its module's `__call__`, so forward hooks fire on it (and FSDP2 can wrap each
stage), and every explicit catalog model exports with a dynamic batch dimension, with
`torch.export` and with the dynamo ONNX exporter (run in onnxruntime at batch sizes other
than the traced one)."""

import warnings
import weakref

import pytest
import torch
from conftest import GENERATED, load_generated

MODEL_FILES = {p.stem: p for p in sorted(GENERATED.glob("*.py")) if "RULES = " in p.read_text()}


def _model_class(stem: str):
    module = load_generated(stem)
    return getattr(module, module.__all__[0])


def _model(stem: str):
    torch.manual_seed(0)
    return _model_class(stem)().eval()


def _explicit(stem: str) -> bool:
    return not any(hasattr(stage, "solver") for stage in _model(stem).stages)


def _batch(model, n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, *model.INPUT_SIZE, generator=torch.Generator().manual_seed(seed))


EXPLICIT_MODELS = [stem for stem in MODEL_FILES if _explicit(stem)]


def test_the_catalog_has_staged_models_that_carry_states():
    carrying = [s for s in MODEL_FILES if "carry=True" in MODEL_FILES[s].read_text()]
    assert len(MODEL_FILES) >= 12 and len(carrying) >= 8 and len(EXPLICIT_MODELS) >= 10


@pytest.mark.parametrize("stem", sorted(MODEL_FILES))
def test_forward_hooks_fire_once_on_every_stage(stem):
    model = _model(stem)
    calls = [0] * len(model.stages)
    for i, stage in enumerate(model.stages):
        stage.register_forward_hook(
            lambda module, args, out, i=i: calls.__setitem__(i, calls[i] + 1)
        )
    with torch.no_grad():
        model(_batch(model, 2))
    assert calls == [1] * len(model.stages)


def test_a_stage_given_slots_continues_them_and_carry_returns_them():
    model = _model("deep_heavy_ball")
    x = model.stem(_batch(model, 2))
    with torch.no_grad():
        slots = model.stages[0](x, carry=True)
        assert isinstance(slots, tuple) and len(slots) == 2
        assert torch.equal(model.stages[0](x), slots[0])
        assert torch.equal(
            model.stages[0].forward_slots(model.stages[0].init_slots(x))[0], slots[0]
        )


def test_a_single_slot_is_carried_without_a_copy():
    # gd carries one slot: the transition maps it alone, no torch.cat.
    text = MODEL_FILES["deep_gd"].read_text()
    features = text[text.index("def forward_features") : text.index("def forward_head")]
    assert "torch.cat" not in features and "(self.transitions[0](slots[0]),)" in features


@pytest.mark.parametrize("stem", ["deep_gd", "deep_nesterov", "wide_apg2"])
def test_a_stage_input_the_slots_carry_on_is_freed_after_its_stage(stem):
    # forward_features holds no reference to the stem's output once stage 0 has
    # returned its slots (`del x`): the later stages run without it.
    model = _model(stem)
    stem_output = []
    model.stem.register_forward_hook(lambda module, args, out: stem_output.append(weakref.ref(out)))
    alive = []
    model.stages[1].register_forward_pre_hook(
        lambda module, args: alive.append(stem_output[0]() is not None)
    )
    with torch.no_grad():
        model(_batch(model, 2))
    assert alive == [False]


@pytest.mark.parametrize("stem", EXPLICIT_MODELS)
def test_torch_export_keeps_the_batch_dynamic(stem):
    model = _model(stem)
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(model, (_batch(model, 4),), dynamic_shapes=({0: batch},))
    for n in (1, 3):
        x = _batch(model, n, seed=n)
        with torch.no_grad():
            torch.testing.assert_close(program.module()(x), model(x), rtol=1e-5, atol=1e-5)


onnxruntime = pytest.importorskip("onnxruntime", reason="pip install 'optgen[test]'")


@pytest.mark.slow
@pytest.mark.parametrize("stem", ["deep_heavy_ball", "wide_nesterov", "iso_vit_apg2"])
def test_onnx_export_runs_at_other_batch_sizes(stem, tmp_path):
    model = _model(stem)
    batch = torch.export.Dim("batch", min=1, max=64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model, (_batch(model, 2),), dynamo=True, dynamic_shapes=({0: batch},), verbose=False
        )
    path = tmp_path / f"{stem}.onnx"
    program.save(str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 5):
        x = _batch(model, n, seed=n)
        with torch.no_grad():
            expected = model(x)
        (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        torch.testing.assert_close(torch.from_numpy(out), expected, rtol=1e-4, atol=1e-5)
