"""Images from a folder on disk, with the data set's own training and test sets:
`optgen experiment fashion-mnist` (IDX files, by default those of Debian's
`dataset-fashion-mnist` package) and `optgen experiment folder --data DIR` (IDX files, an
ImageFolder-style tree, or CIFAR-style pickle batches).

Each reader returns every image as uint8 [N, C, H, W] (C is 1 or 3, from the data) with
its integer label; `image_data` takes the split of a run from them and brings the images
to 32x32. Every failure (a missing folder or file, a wrong magic number, a truncated file,
an unreadable image) is a `DataError` whose message names the file.
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
import re
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

# Where Debian's dataset-fashion-mnist package installs Fashion-MNIST (the four .gz files).
DEBIAN_FOLDER = Path("/usr/share/datasets/fashion-mnist")
DEBIAN_PACKAGE = "dataset-fashion-mnist"
# The four IDX files of MNIST and Fashion-MNIST; each may also be gzipped (NAME.gz).
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# An ImageFolder-style tree: DIR/train/CLASS/*, DIR/test/CLASS/* (or DIR/val/CLASS/*).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
FORMATS = {
    "idx": "IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte,"
    " t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, each may be .gz)",
    "image-folder": "a tree of images (train/CLASS/*.png|jpg|..., test/CLASS/* or val/CLASS/*)",
    "cifar-pickle": "CIFAR-style pickle batches (data_batch_1, ..., test_batch; or CIFAR-100's"
    " train and test)",
}


class DataError(Exception):
    """The data folder, or a file in it, is missing or cannot be read as its format."""


@dataclass(frozen=True)
class SourceImages:
    """Every image of a data folder, at its own size, and what the report says of it."""

    train_x: object  # numpy uint8 [N, C, H, W]
    train_y: object  # numpy int64 [N]
    test_x: object
    test_y: object
    classes: tuple[str, ...]
    format: str  # a key of FORMATS
    path: str
    description: str  # the report's "source"
    files: dict = field(default_factory=dict)  # name: {"bytes", "sha256"} of each file read

    @property
    def channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def pool(self) -> tuple[int, int]:
        """(training images, test images) there are to choose from."""
        return len(self.train_y), len(self.test_y)


# -- IDX ------------------------------------------------------------------------------------


def _read_bytes(path: Path) -> bytes:
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise DataError(f"{path} is not a complete gzip file ({err})") from None
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}") from None


def parse_idx(path: Path, data: bytes, ndim: int):
    """The uint8 array of IDX bytes `data` (read from `path`, named in every error)."""
    import numpy as np

    kind = "images" if ndim == 3 else "labels" if ndim == 1 else f"{ndim}-d arrays"
    expected = 0x800 + ndim
    if len(data) < 4:
        raise DataError(
            f"{path} is not an IDX file of {kind}: {len(data)} bytes, too short for its"
            f" magic number 0x{expected:08x}"
        )
    magic = struct.unpack(">I", data[:4])[0]
    if magic != expected:
        raise DataError(
            f"{path} is not an IDX file of {kind}: magic number 0x{magic:08x}, expected"
            f" 0x{expected:08x} ({ndim}-dimensional, unsigned bytes)"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path} is truncated: {len(data)} bytes, its header alone takes {header}")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    size = 1
    for n in shape:
        size *= n
    held = len(data) - header
    if held != size:
        dims = " x ".join(str(n) for n in shape)
        what = "is truncated" if held < size else "is longer than its header says"
        raise DataError(
            f"{path} {what}: its header gives {dims} = {size} bytes of data, the file"
            f" holds {held}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def read_idx(path: Path, ndim: int):
    """The uint8 array of an IDX file (gzipped if its name ends in .gz) of `ndim`
    dimensions: magic number 0x00000800 + ndim (unsigned bytes), then the dimensions as
    big-endian 32-bit integers, then exactly their product of bytes."""
    path = Path(path)
    return parse_idx(path, _read_bytes(path), ndim)


def find_idx(folder: Path) -> tuple[dict[str, Path], list[str]]:
    """The IDX files found in `folder` (each NAME or NAME.gz; NAME if both) and the names
    of those missing."""
    found, missing = {}, []
    for key, name in IDX_FILES.items():
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            missing.append(name)
    return found, missing


def load_idx(folder: Path, classes: tuple[str, ...] | None = None) -> SourceImages:
    """The four IDX files of `folder`: images [N, rows, cols] and labels [N] for the
    training and the test set. `classes`: the names of the labels 0, 1, ... (checked);
    None: as many classes as the largest label says, named by their number."""
    import numpy as np

    paths, missing = find_idx(folder)
    if missing:
        raise DataError(
            f"{folder} has no {', '.join(m + '[.gz]' for m in missing)}: not a folder of"
            f" {FORMATS['idx']}"
        )
    files, arrays = {}, {}
    for key, path in paths.items():
        files[path.name] = {"bytes": path.stat().st_size, "sha256": _file_sha256(path)}
        arrays[key] = read_idx(path, 3 if key.endswith("images") else 1)
    splits = {}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if len(images) != len(labels):
            raise DataError(
                f"{paths[split + '_images']} holds {len(images)} images but"
                f" {paths[split + '_labels']} {len(labels)} labels"
            )
        if len(images) == 0:
            raise DataError(f"{paths[split + '_images']} holds no images")
        splits[split] = (images[:, None], labels.astype(np.int64))
    names = classes or tuple(str(i) for i in range(int(splits["train"][1].max()) + 1))
    _check_labels(splits, names, {s: paths[f"{s}_labels"] for s in splits})
    return SourceImages(
        *splits["train"],
        *splits["test"],
        classes=names,
        format="idx",
        path=str(folder.absolute()),
        description=f"IDX files in {folder}",
        files=files,
    )


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_labels(splits: dict, classes: tuple[str, ...], where: dict) -> None:
    for split, (_, labels) in splits.items():
        bad = labels[(labels < 0) | (labels >= len(classes))]
        if len(bad):
            raise DataError(
                f"{where[split]} has label {int(bad[0])}, but the data set has"
                f" {len(classes)} classes (labels 0 to {len(classes) - 1})"
            )


# -- an ImageFolder-style tree ----------------------------------------------------------------


def load_image_folder(folder: Path, size: int = 32) -> SourceImages:
    """DIR/train/CLASS/* for training, DIR/test/CLASS/* (or DIR/val/CLASS/*) for the test:
    the classes are the folders under train/, in sorted order; every image is read with
    Pillow, cut to its central square, resized to size x size (Pillow's antialiased
    bilinear filter) and kept grayscale if every image of both sets is grayscale, else
    converted to RGB (a grayscale image then repeats its one channel)."""
    import numpy as np

    train_dir = folder / "train"
    test_dir = next((folder / n for n in ("test", "val") if (folder / n).is_dir()), None)
    if not train_dir.is_dir() or test_dir is None:
        raise DataError(
            f"{folder} has no {'train/' if not train_dir.is_dir() else 'test/ or val/'}"
            f" folder: not {FORMATS['image-folder']}"
        )
    classes = tuple(sorted(d.name for d in train_dir.iterdir() if d.is_dir()))
    if not classes:
        raise DataError(f"{train_dir} has no class folders (train/CLASS/IMAGE)")
    splits, gray = {}, True
    for split_dir in (train_dir, test_dir):
        images, labels = [], []
        for class_dir in sorted(d for d in split_dir.iterdir() if d.is_dir()):
            if class_dir.name not in classes:
                raise DataError(
                    f"{class_dir} is a class the training set does not have"
                    f" (the classes are the folders of {train_dir})"
                )
            for path in _image_files(class_dir):
                image = _read_image(path, size)
                gray = gray and image.ndim == 2
                images.append(image)
                labels.append(classes.index(class_dir.name))
        if not images:
            raise DataError(
                f"{split_dir} holds no images ({', '.join(IMAGE_SUFFIXES)} in class folders)"
            )
        splits[split_dir.name] = (images, np.asarray(labels, dtype=np.int64))
    arrays = {}
    for name, (images, labels) in splits.items():
        if gray:
            stacked = np.stack(images)[:, None]
        else:
            rgb = [np.repeat(i[:, :, None], 3, 2) if i.ndim == 2 else i for i in images]
            stacked = np.stack(rgb).transpose(0, 3, 1, 2)
        arrays[name] = (np.ascontiguousarray(stacked), labels)
    return SourceImages(
        *arrays["train"],
        *arrays[test_dir.name],
        classes=classes,
        format="image-folder",
        path=str(folder.absolute()),
        description=(
            f"a tree of images in {folder}: train/ and {test_dir.name}/, one folder a class,"
            f" read with Pillow as {'grayscale' if gray else 'RGB'}"
        ),
        files={
            "train/": {"images": len(splits["train"][1])},
            f"{test_dir.name}/": {"images": len(splits[test_dir.name][1])},
        },
    )


def _image_files(class_dir: Path) -> list[Path]:
    """The images below a class folder (subfolders included), in sorted order; hidden
    files and files of other suffixes are left out."""
    return sorted(
        p
        for p in class_dir.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(class_dir).parts)
    )


def _read_image(path: Path, size: int):
    """The image as uint8 [size, size] (grayscale) or [size, size, 3] (any other mode)."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            image = image.convert("L" if image.mode in GRAY_MODES else "RGB")
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise DataError(f"cannot read the image {path}: {err}") from None
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    image = image.crop((left, top, left + side, top + side))
    image = image.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


# -- CIFAR-style pickle batches ------------------------------------------------------------


class _ArraysOnly(pickle.Unpickler):
    """Unpickles dicts, lists, bytes and numpy arrays, nothing that runs other code: a
    batch file is data, and a pickle may otherwise call any function."""

    ALLOWED = {
        (module, name)
        for prefix in ("numpy.core", "numpy._core")
        for module, name in (
            (f"{prefix}.multiarray", "_reconstruct"),
            (f"{prefix}.multiarray", "scalar"),
            (f"{prefix}.numeric", "_frombuffer"),
        )
    } | {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}
    # _codecs.encode: how protocol 2 writes bytes (and the bytes of an array) from Python 3.

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            import importlib

            # numpy 2 wrote numpy._core, numpy 1 numpy.core: either reads with either.
            suffix = module.split("core", 1)[1] if "core" in module else ""
            for candidate in (module, f"numpy._core{suffix}", f"numpy.core{suffix}"):
                try:
                    return getattr(importlib.import_module(candidate), name)
                except (ImportError, AttributeError):
                    continue
        raise pickle.UnpicklingError(
            f"it holds a {module}.{name}, and a batch file holds only numpy arrays, lists"
            " and bytes"
        )


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            batch = _ArraysOnly(f, encoding="bytes").load()
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}") from None
    except Exception as err:  # a pickle can fail in many ways: all mean "not a batch"
        raise DataError(f"{path} is not a CIFAR-style pickle batch: {err}") from None
    if not isinstance(batch, dict):
        raise DataError(f"{path} holds {type(batch).__name__}, not a dict (data, labels)")
    return {k.decode("latin-1") if isinstance(k, bytes) else k: v for k, v in batch.items()}


def cifar_files(folder: Path) -> tuple[list[Path], list[Path], Path | None]:
    """(training batches, test batches, meta file) of a CIFAR-style folder: CIFAR-10's
    data_batch_1, data_batch_2, ... (in numeric order), test_batch and batches.meta, or
    CIFAR-100's train, test and meta."""

    def number(path: Path) -> int:
        return int(path.name.rsplit("_", 1)[1])

    batches = [p for p in folder.glob("data_batch_*") if re.fullmatch(r"data_batch_\d+", p.name)]
    train = sorted(batches, key=number)
    test = [folder / "test_batch"] if (folder / "test_batch").is_file() else []
    meta = folder / "batches.meta"
    if not train and not test and (folder / "train").is_file():
        train, meta = [folder / "train"], folder / "meta"
        test = [folder / "test"] if (folder / "test").is_file() else []
    return train, test, meta if meta.is_file() else None


def load_cifar(folder: Path) -> SourceImages:
    """Pickle batches as CIFAR's Python version has them: each a dict with "data", uint8
    [N, 3 * S * S] (the red plane, the green, the blue; row by row) and "labels" (or
    CIFAR-100's "fine_labels"), keys as bytes or str; class names from batches.meta's
    "label_names" (or meta's "fine_label_names") when there is one."""
    import numpy as np

    train, test, meta = cifar_files(folder)
    if not train or not test:
        raise DataError(
            f"{folder} has no {'training batches' if not train else 'test_batch'}: not a"
            f" folder of {FORMATS['cifar-pickle']}"
        )
    splits, files = {}, {}
    for split, paths in (("train", train), ("test", test)):
        images, labels = [], []
        for path in paths:
            batch = _unpickle(path)
            files[path.name] = {"bytes": path.stat().st_size, "sha256": _file_sha256(path)}
            x, y = _cifar_batch(path, batch)
            images.append(x)
            labels.append(y)
        shapes = {x.shape[1:] for x in images}
        if len(shapes) > 1:
            raise DataError(f"the batches of {folder} hold images of different sizes: {shapes}")
        splits[split] = (np.concatenate(images), np.concatenate(labels))
    if splits["train"][0].shape[1:] != splits["test"][0].shape[1:]:
        raise DataError(f"the training and test batches of {folder} differ in image size")
    largest = max(int(splits[s][1].max()) for s in splits)
    classes = tuple(str(i) for i in range(largest + 1))
    if meta is not None:
        files[meta.name] = {"bytes": meta.stat().st_size, "sha256": _file_sha256(meta)}
        names = _unpickle(meta)
        named = names.get("label_names", names.get("fine_label_names"))
        if isinstance(named, list) and len(named) > largest:
            classes = tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in named)
    _check_labels(splits, classes, {"train": train[0].parent, "test": test[0]})
    return SourceImages(
        *splits["train"],
        *splits["test"],
        classes=classes,
        format="cifar-pickle",
        path=str(folder.absolute()),
        description=f"CIFAR-style pickle batches in {folder}",
        files=files,
    )


def _cifar_batch(path: Path, batch: dict):
    import numpy as np

    if "data" not in batch or not ({"labels", "fine_labels"} & set(batch)):
        raise DataError(
            f"{path} has no {'data' if 'data' not in batch else 'labels'}: a CIFAR-style batch"
            f" is a dict with data and labels (it has {', '.join(map(str, batch)) or 'nothing'})"
        )
    data = np.asarray(batch["data"])
    labels = np.asarray(batch.get("labels", batch.get("fine_labels")), dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim not in (2, 4):
        raise DataError(
            f"{path}: its data is {data.dtype} {list(data.shape)}, not uint8 [N, 3 * S * S]"
        )
    if data.ndim == 2:
        side = round((data.shape[1] / 3) ** 0.5)
        if 3 * side * side != data.shape[1]:
            raise DataError(
                f"{path}: rows of {data.shape[1]} bytes are not 3 planes of S x S pixels"
            )
        data = data.reshape(-1, 3, side, side)
    if len(data) != len(labels) or labels.ndim != 1:
        raise DataError(f"{path} holds {len(data)} images but {labels.size} labels")
    return data, labels


# -- finding the data --------------------------------------------------------------------------


def detect(folder: Path) -> str:
    """The format of a data folder: a key of FORMATS."""
    if find_idx(folder)[0]:
        return "idx"
    train, test, _ = cifar_files(folder)
    if train or test:
        return "cifar-pickle"
    if (folder / "train").is_dir():
        return "image-folder"
    raise DataError(
        f"{folder} holds no data set this experiment reads: give a folder of "
        + "; or ".join(FORMATS.values())
    )


def load_source(experiment: str, data: str | Path | None) -> SourceImages:
    """The images of `optgen experiment fashion-mnist` (IDX files from `data`, or from
    Debian's package folder) or of `optgen experiment folder --data DIR` (any format)."""
    if experiment == "fashion-mnist":
        folder = Path(data) if data is not None else DEBIAN_FOLDER
        files = ", ".join(IDX_FILES.values())
        if not folder.is_dir() or find_idx(folder)[1]:
            if not folder.is_dir():
                where = f"--data {folder}: no such folder" if data else f"no folder {folder}"
            else:
                where = f"{folder} has no {', '.join(n + '[.gz]' for n in find_idx(folder)[1])}"
            raise DataError(
                f"no Fashion-MNIST: {where}. Install Debian's package (apt-get install"
                f" {DEBIAN_PACKAGE}, which puts it in {DEBIAN_FOLDER}) or give --data DIR, a"
                f" folder with {files} (each may be gzipped, NAME.gz)"
            )
        source = load_idx(folder, FASHION_CLASSES)
        from_debian = folder.resolve() == DEBIAN_FOLDER.resolve()
        what = "Debian's dataset-fashion-mnist package" if from_debian else "IDX files"
        (n_train, n_test), (rows, cols) = source.pool, source.train_x.shape[2:]
        description = (
            f"Fashion-MNIST ({what}, {folder}): {n_train:,} training and {n_test:,} test"
            f" images of clothing, {rows}x{cols}, values 0-255, 10 classes"
        )
        return _described(source, description)
    if data is None:
        raise DataError(
            "optgen experiment folder needs --data DIR: a folder of "
            + "; or ".join(FORMATS.values())
        )
    folder = Path(data)
    if not folder.is_dir():
        raise DataError(f"--data {folder}: no such folder")
    kind = detect(folder)
    if kind == "idx":
        return load_idx(folder)
    if kind == "cifar-pickle":
        return load_cifar(folder)
    return load_image_folder(folder)


def _described(source: SourceImages, description: str) -> SourceImages:
    from dataclasses import replace

    return replace(source, description=description)
