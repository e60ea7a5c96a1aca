"""Generated models are timm models (issue 25, point 1): registered when timm imports, built
by `timm.create_model` (classes, input channels, features_only), with timm's feature API
(`feature_info`, `forward_intermediates`, `prune_intermediate_layers`), `get_classifier`,
`set_grad_checkpointing` and `no_weight_decay`, and trained a few steps with timm's own data
config, transforms, optimizer, scheduler, Mixup and EMA."""

import pytest
import torch
from conftest import GENERATED, import_timm, load_generated

STAGED, ISOTROPIC, SOLVING = "deep_heavy_ball", "iso_vit_apg2", "wide_apg2"


@pytest.fixture(scope="module")
def timm():
    return import_timm()


@pytest.fixture(scope="module")
def registered(timm):
    return {
        stem: load_generated(stem, "generated_timm", registered=True)
        for stem in (STAGED, ISOTROPIC, SOLVING)
    }


def _images(n: int = 2, channels: int = 3) -> torch.Tensor:
    return torch.randn(n, channels, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("stem", [STAGED, ISOTROPIC, SOLVING])
def test_timm_create_model_builds_it(timm, registered, stem):
    assert stem in timm.list_models(stem)
    model = timm.create_model(stem, num_classes=5, in_chans=1).eval()
    assert isinstance(model, getattr(registered[stem], type(model).__name__))
    assert model(_images(2, channels=1)).shape == (2, 5)
    assert model.pretrained_cfg["input_size"] == (3, 32, 32)
    assert model.get_classifier().out_features == 5


def test_a_file_imported_without_timm_registers_nothing_and_needs_nothing():
    # The class alone, as exec'd into a namespace (optgen's FLOP count does this).
    namespace = {"__name__": "not_a_module"}
    exec(compile((GENERATED / f"{STAGED}.py").read_text(), "x.py", "exec"), namespace)
    assert namespace["DeepHeavyBall"]()(_images()).shape == (2, 10)


@pytest.mark.parametrize("stem", [STAGED, ISOTROPIC])
def test_features_only_gives_each_stage(timm, registered, stem):
    model = timm.create_model(stem, features_only=True, out_indices=(0, -1)).eval()
    features = model(_images())
    channels = model.feature_info.channels()
    stages = len(timm.create_model(stem).stages)
    assert (
        len(features) == len({0, stages - 1})
        and [f.shape[1 if f.dim() == 4 else 2] for f in features] == channels
    )
    full = timm.create_model(stem).eval()
    final, intermediates = full.forward_intermediates(_images())
    assert torch.equal(final, full.forward_features(_images()))
    assert len(intermediates) == len(full.stages)
    reductions = [info["reduction"] for info in full.feature_info]
    assert reductions == sorted(reductions) and reductions[0] >= 1


def test_intermediates_are_the_stage_outputs(registered):
    model = registered[STAGED].DeepHeavyBall().eval()
    x = _images()
    with torch.no_grad():
        _, (first, *_) = model.forward_intermediates(x)
        expected = model.stages[0](model.stem(x))
    torch.testing.assert_close(first, expected)
    last = model.forward_intermediates(x, indices=1, intermediates_only=True)[0]
    assert last.shape[1] == model.feature_info[-1]["num_chs"] == model.num_features


def test_prune_keeps_the_stages_and_drops_the_head(registered):
    model = registered[STAGED].DeepHeavyBall()
    assert model.prune_intermediate_layers([0, 1]) == [0, 1]
    assert isinstance(model.get_classifier(), torch.nn.Identity)
    with pytest.raises(ValueError, match="stage indices"):
        model.prune_intermediate_layers([5])


def test_grad_checkpointing_gives_the_same_gradients(registered):
    torch.manual_seed(0)
    model = registered[STAGED].DeepHeavyBall().train()
    x = _images()
    plain = torch.autograd.grad(model(x).square().sum(), list(model.parameters()))
    model.set_grad_checkpointing(True)
    checkpointed = torch.autograd.grad(model(x).square().sum(), list(model.parameters()))
    for a, b in zip(plain, checkpointed):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_no_weight_decay_names_position_embeddings_and_learnable_steps(registered):
    vit = registered[ISOTROPIC].IsoVitApg2()
    assert "stem.position" in vit.no_weight_decay()
    text = (GENERATED / f"{STAGED}.py").read_text()
    learnable = "_Learnable(" in text
    names = registered[STAGED].DeepHeavyBall().no_weight_decay()
    assert all(name.startswith("stages.") for name in names) and bool(names) == learnable


@pytest.mark.slow
def test_a_few_training_steps_with_timms_pieces(timm, registered):
    from timm.data import Mixup, create_transform, resolve_data_config
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2
    from timm.utils import ModelEmaV3

    torch.manual_seed(0)
    model = timm.create_model(STAGED, num_classes=4)
    config = resolve_data_config({}, model=model)
    assert config["input_size"] == (3, 32, 32)
    transform = create_transform(**config, is_training=False)
    from PIL import Image

    pixels = (torch.rand(40, 40, 3) * 255).to(torch.uint8).numpy()
    image = transform(Image.fromarray(pixels))
    assert image.shape == (3, 32, 32)
    optimizer = create_optimizer_v2(model, opt="adamw", lr=1e-3, weight_decay=0.05)
    scheduler, _ = create_scheduler_v2(optimizer, sched="cosine", num_epochs=2)
    mixup = Mixup(mixup_alpha=0.2, num_classes=4, label_smoothing=0.1)
    ema = ModelEmaV3(model, decay=0.9)
    x = torch.stack([image] * 4)
    y = torch.tensor([0, 1, 2, 3])
    losses = []
    for epoch in range(2):
        for _ in range(3):
            mixed, target = mixup(x, y)
            loss = torch.sum(-target * model(mixed).log_softmax(-1), dim=-1).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            ema.update(model)
            losses.append(loss.item())
        scheduler.step(epoch + 1)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert ema.module(x).shape == (4, 4)
