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


# The image experiments: real images, the catalog's image classifiers. The first two take
# their test set out of one pool of images; the others read a data folder (the IDX files of
# Debian's dataset-fashion-mnist, or any folder of `--data DIR`) that has its own training
# and test sets.
SOURCE_EXPERIMENTS = ("fashion-mnist", "folder")
IMAGE_EXPERIMENTS = ("mnist", "digits", *SOURCE_EXPERIMENTS)


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
    bf16: bool = False  # forward passes under bf16 autocast (the device's); float32 else

    @property
    def steps_per_epoch(self) -> int:
        return self.n_train // self.batch

    @property
    def steps(self) -> int:
        return self.epochs * self.steps_per_epoch


# Each data set's size, to check --train-size against; a data folder's are those found.
IMAGE_POOL = {"mnist": 5000, "digits": 1797}
# A data folder's default run: the first DEFAULT_TRAIN images of a seeded permutation of its
# training images (all of them if fewer), DEFAULT_EPOCHS epochs, DEFAULT_SEEDS seeds; its
# test set is all of its test images. Chosen so that Fashion-MNIST's default run (8 models,
# 10,000 test images) takes about 1.5 CPU-hours on this project's 2-core machine, and that 5
# seeds give a paired interval of a few tenths of a point. --quick: QUICK_TRAIN and
# QUICK_TEST (or all, if fewer).
DEFAULT_TRAIN, DEFAULT_EPOCHS, DEFAULT_SEEDS = 15_000, 4, 5
QUICK_TRAIN, QUICK_TEST = 256, 200


def image_settings_for(
    name: str,
    quick: bool = False,
    seeds: int | None = None,
    epochs: int | None = None,
    batch: int | None = None,
    train_size: int | None = None,
    test_size: int | None = None,
    pool: tuple[int, int] | None = None,
    bf16: bool = False,
) -> ImageSettings:
    """The default settings of `name`, `--quick`'s, then the options given on top.

    `pool`: the (training, test) images of the data folder of a SOURCE_EXPERIMENTS run,
    which its defaults and checks depend on. Raises `ValueError` for an option out of range.
    """
    chosen = check_ranges(seeds, epochs, batch, train_size, test_size)
    if name in SOURCE_EXPERIMENTS:
        if pool is None:
            raise ValueError(f"the {name} experiment's settings depend on its data: give pool")
        base = ImageSettings(
            name,
            n_train=min(DEFAULT_TRAIN, pool[0]),
            n_test=pool[1],
            epochs=DEFAULT_EPOCHS,
            seeds=DEFAULT_SEEDS,
        )
        if quick:
            base = replace(
                base,
                n_train=min(QUICK_TRAIN, pool[0]),
                n_test=min(QUICK_TEST, pool[1]),
                epochs=1,
                batch=32,
                seeds=1,
            )
    elif name == "digits":
        # 8x8 digits: each pixel becomes a 4x4 block (one patch of the patchify stems), so
        # a shift of 4 is one pixel of the original; 1,797 images, hence more epochs.
        base = ImageSettings(name, n_train=1500, n_test=297, epochs=8, shift=4)
    else:
        base = ImageSettings(name)
    if quick and name not in SOURCE_EXPERIMENTS:
        base = replace(base, n_train=256, n_test=200, epochs=1, batch=32, seeds=1)
    base = replace(base, bf16=bf16, **{k: v for k, v in chosen.items() if v is not None})
    if name in SOURCE_EXPERIMENTS:
        for option, size, held in (
            ("n_train", base.n_train, pool[0]),
            ("n_test", base.n_test, pool[1]),
        ):
            if size > held:
                which = "training" if option == "n_train" else "test"
                raise ValueError(
                    f"--{_flag(option)} {size} is too large: the {which} set of the {name}"
                    f" data has {held} images"
                )
    else:
        if base.n_test >= IMAGE_POOL[name]:
            raise ValueError(
                f"--test-size {base.n_test} is too large: the {name} data set has"
                f" {IMAGE_POOL[name]} images, and some must be left for training"
            )
        room = IMAGE_POOL[name] - base.n_test
        if base.n_train > room:
            raise ValueError(
                f"--train-size {base.n_train} is too large: the {name} data set has"
                f" {IMAGE_POOL[name]} images and {base.n_test} are kept for the test"
            )
    if base.batch > base.n_train:
        raise ValueError(f"--batch {base.batch} is larger than the {base.n_train} training images")
    return base


def check_ranges(
    seeds: int | None = None,
    epochs: int | None = None,
    batch: int | None = None,
    train_size: int | None = None,
    test_size: int | None = None,
) -> dict:
    """The options given, by settings field; raise `ValueError` for one below 1."""
    chosen = {
        "seeds": seeds,
        "epochs": epochs,
        "batch": batch,
        "n_train": train_size,
        "n_test": test_size,
    }
    for option, value in chosen.items():
        if value is not None and value < 1:
            raise ValueError(f"--{_flag(option)} must be at least 1")
    return chosen


def _flag(option: str) -> str:
    return {"n_train": "train-size", "n_test": "test-size"}.get(option, option)
