"""The settings of one run: the same for every network it trains."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Settings:
    experiment: str
    dim: int = 32
    depth: int = 8
    steps: int = 1500
    batch: int = 256
    lr: float = 3e-3
    seeds: int = 3
    n_train: int = 2048
    n_test: int = 2048
    data_seed: int = 1234
    rings: int = 4
    parity_bits: int = 6
    tent_compositions: int = 4


def settings_for(name: str, quick: bool, seeds: int | None) -> Settings:
    base = Settings(name)
    if name == "telgarsky":
        base = replace(base, n_train=1024, n_test=1000)
    if quick:
        base = replace(base, steps=150, seeds=1, n_train=512, n_test=512)
    if seeds is not None:
        base = replace(base, seeds=seeds)
    return base


# The image experiments: real digits, the catalog's image classifiers.
IMAGE_EXPERIMENTS = ("mnist", "digits")


@dataclass(frozen=True)
class ImageSettings:
    """Everything that decides an image run's numbers, and nothing else.

    The world size is not here: a run on any number of ranks is the same computation (the
    same batches, BatchNorm statistics, seeds and averaged gradients; in float64 the same
    metrics to 1e-8), so a run may be resumed on another number of ranks. In float32 the
    sums are rounded in another order, and training amplifies that: the quick deep_gd
    run's test loss moved by 1.4e-5 to 5.6e-4 between 1 and 2 ranks, depending on the
    CPU kernels (see tests/test_experiments_images.py).
    """

    experiment: str
    n_train: int = 4000
    n_test: int = 1000
    epochs: int = 2
    batch: int = 64  # the global batch, split evenly over the ranks
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup: float = 0.05  # fraction of the steps with a linear warm-up, then cosine to 0
    shift: int = 2  # random crop: zero-pad by `shift` pixels, crop back to `size`
    size: int = 32  # images are fed at size x size, one channel
    seeds: int = 3
    data_seed: int = 1234

    @property
    def steps_per_epoch(self) -> int:
        return self.n_train // self.batch

    @property
    def steps(self) -> int:
        return self.epochs * self.steps_per_epoch


# Each data set's size, to check --train-size against.
IMAGE_POOL = {"mnist": 5000, "digits": 1797}


def image_settings_for(
    name: str,
    quick: bool = False,
    seeds: int | None = None,
    epochs: int | None = None,
    batch: int | None = None,
    train_size: int | None = None,
) -> ImageSettings:
    """The default settings of `name`, `--quick`'s, then the options given on top.

    Raises `ValueError` for an option out of range.
    """
    if name == "digits":
        # 8x8 digits: each pixel becomes a 4x4 block (one patch of the patchify stems), so
        # a shift of 4 is one pixel of the original; 1,797 images, hence more epochs.
        base = ImageSettings(name, n_train=1500, n_test=297, epochs=8, shift=4)
    else:
        base = ImageSettings(name)
    if quick:
        base = replace(base, n_train=256, n_test=200, epochs=1, batch=32, seeds=1)
    chosen = {"seeds": seeds, "epochs": epochs, "batch": batch, "n_train": train_size}
    for option, value in chosen.items():
        if value is not None and value < 1:
            raise ValueError(f"--{_flag(option)} must be at least 1")
    base = replace(base, **{k: v for k, v in chosen.items() if v is not None})
    room = IMAGE_POOL[name] - base.n_test
    if base.n_train > room:
        raise ValueError(
            f"--train-size {base.n_train} is too large: the {name} data set has"
            f" {IMAGE_POOL[name]} images and {base.n_test} are kept for the test"
        )
    if base.batch > base.n_train:
        raise ValueError(f"--batch {base.batch} is larger than the {base.n_train} training images")
    return base


def _flag(option: str) -> str:
    return "train-size" if option == "n_train" else option
