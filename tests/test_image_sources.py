"""Data folders of the image experiments (`optgen experiment fashion-mnist` and
`optgen experiment folder --data DIR`): the IDX reader on IDX files written here (plain and
gzipped, a wrong magic number, truncated), the tree-of-images reader on tiny PNGs, the
CIFAR-style pickle reader on a tiny batch, a quick fashion-mnist run end to end on
generated IDX files, and the error when there is no data. CI does not need Debian's
dataset-fashion-mnist package: every file is written by the test."""

import gzip
import json
import math
import pickle
import struct

import numpy as np
import pytest
from conftest import run_optgen

from optgen.experiments.image_data import load_images, to_size
from optgen.experiments.image_sources import (
    DEBIAN_FOLDER,
    FASHION_CLASSES,
    DataError,
    detect,
    load_cifar,
    load_idx,
    load_image_folder,
    load_source,
    parse_idx,
    read_idx,
)
from optgen.experiments.settings import image_settings_for

PNG = b"\x89PNG\r\n\x1a\n"


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes: magic 0x00000800 + ndim, big-endian dims, the data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">I", 0x800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_idx(path, array, gz=False):
    data = idx_bytes(array)
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def fashion_folder(folder, n_train=300, n_test=200, gz=True, seed=0):
    """The four IDX files of a Fashion-MNIST-like set of random 28x28 images whose class
    is readable from their brightness (so that training has something to learn)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 40, (n, 28, 28)) + 20 * labels[:, None, None]
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images.astype(np.uint8), gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, gz)
    return folder


# -- IDX ------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_the_idx_reader_gives_back_what_was_written(tmp_path, gz):
    images = np.arange(3 * 5 * 4, dtype=np.uint8).reshape(3, 5, 4)
    labels = np.array([7, 0, 9], dtype=np.uint8)
    assert np.array_equal(read_idx(write_idx(tmp_path / "x-idx3-ubyte", images, gz), 3), images)
    assert np.array_equal(read_idx(write_idx(tmp_path / "y-idx1-ubyte", labels, gz), 1), labels)


def test_a_folder_of_idx_files_gives_both_sets_with_one_channel(tmp_path):
    source = load_idx(fashion_folder(tmp_path / "d", 30, 20, gz=False), FASHION_CLASSES)
    assert source.train_x.shape == (30, 1, 28, 28) and source.test_x.shape == (20, 1, 28, 28)
    assert source.train_y.dtype == np.int64 and source.pool == (30, 20)
    assert (source.channels, source.num_classes, source.format) == (1, 10, "idx")
    assert sorted(source.files) == sorted(
        f"{p}-{k}-idx{d}-ubyte"
        for p in ("train", "t10k")
        for k, d in (("images", 3), ("labels", 1))
    )
    assert all(len(f["sha256"]) == 64 and f["bytes"] > 0 for f in source.files.values())


def test_a_plain_file_is_read_before_its_gzipped_twin(tmp_path):
    folder = fashion_folder(tmp_path / "d", 30, 20, gz=True)
    fashion_folder(folder, 31, 20, gz=False)
    assert load_idx(folder).pool == (31, 20)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\x00\x00", "too short for its magic number 0x00000803"),
        (idx_bytes(np.zeros((2, 3), np.uint8)), "magic number 0x00000802, expected 0x00000803"),
        (b"\x00\x00\x0d\x03" + b"\x00" * 12, "magic number 0x00000d03, expected 0x00000803"),
        (idx_bytes(np.zeros((2, 4, 4), np.uint8))[:10], "is truncated: 10 bytes, its header"),
        (idx_bytes(np.zeros((2, 4, 4), np.uint8))[:-1], "is truncated: its header gives 2 x 4"),
        (idx_bytes(np.zeros((2, 4, 4), np.uint8)) + b"\x00", "is longer than its header says"),
    ],
    ids=["short", "labels-magic", "int-magic", "cut-header", "cut-data", "too-long"],
)
def test_a_wrong_or_truncated_idx_file_is_refused_by_name(tmp_path, data, message):
    path = tmp_path / "train-images-idx3-ubyte"
    with pytest.raises(DataError) as err:
        parse_idx(path, data, 3)
    assert message in str(err.value) and str(path) in str(err.value)


def test_a_truncated_gzip_file_is_refused_by_name(tmp_path):
    path = write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(5000, np.uint8), gz=True)
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(DataError, match="is not a complete gzip file") as err:
        read_idx(path, 1)
    assert str(path) in str(err.value)


def test_labels_that_do_not_match_the_images_are_refused(tmp_path):
    folder = fashion_folder(tmp_path / "d", 30, 20, gz=False)
    write_idx(folder / "t10k-labels-idx1-ubyte", np.zeros(19, np.uint8))
    with pytest.raises(DataError, match="holds 20 images but .*t10k-labels-idx1-ubyte 19 labels"):
        load_idx(folder)
    write_idx(folder / "t10k-labels-idx1-ubyte", np.full(20, 10, np.uint8))
    with pytest.raises(DataError, match="has label 10, but the data set has 10 classes"):
        load_idx(folder, FASHION_CLASSES)


# -- a tree of images ---------------------------------------------------------------------------


def write_png(path, size, mode, value):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    colour = value if mode == "L" else (value, 255 - value, 0)
    Image.new(mode, size, colour).save(path)


def test_a_tree_of_images_is_read_at_32x32_with_the_classes_of_train(tmp_path):
    for split, n in (("train", 3), ("val", 1)):
        for c, name in enumerate(("cat", "dog")):
            for i in range(n):
                write_png(tmp_path / split / name / f"{i}.png", (40 + i, 50), "L", 100 * c)
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    source = load_image_folder(tmp_path)
    assert detect(tmp_path) == "image-folder"
    assert source.classes == ("cat", "dog") and source.pool == (6, 2)
    assert source.train_x.shape == (6, 1, 32, 32) and source.train_x.dtype == np.uint8
    assert source.train_y.tolist() == [0, 0, 0, 1, 1, 1] and source.test_y.tolist() == [0, 1]
    assert source.train_x[3].min() == source.train_x[3].max() == 100


def test_one_colour_image_makes_every_image_rgb(tmp_path):
    write_png(tmp_path / "train" / "a" / "0.png", (32, 32), "L", 7)
    write_png(tmp_path / "train" / "b" / "0.jpg", (64, 48), "RGB", 200)
    write_png(tmp_path / "test" / "a" / "0.png", (16, 16), "L", 9)
    source = load_image_folder(tmp_path)
    assert source.channels == 3 and source.test_x.shape == (1, 3, 32, 32)
    assert (source.train_x[0] == 7).all() and (source.test_x[0] == 9).all()
    red, green, blue = source.train_x[1].reshape(3, -1).mean(1)
    assert abs(red - 200) < 3 and abs(green - 55) < 3 and blue < 3


def test_a_bad_tree_is_refused_by_name(tmp_path):
    write_png(tmp_path / "train" / "a" / "0.png", (8, 8), "L", 1)
    with pytest.raises(DataError, match="has no test/ or val/ folder"):
        load_image_folder(tmp_path)
    write_png(tmp_path / "test" / "z" / "0.png", (8, 8), "L", 1)
    with pytest.raises(DataError, match="is a class the training set does not have"):
        load_image_folder(tmp_path)
    (tmp_path / "test" / "z" / "0.png").unlink()
    (tmp_path / "test" / "a").mkdir()
    (tmp_path / "test" / "a" / "1.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read the image .*1.png"):
        load_image_folder(tmp_path)


# -- CIFAR-style pickle batches ----------------------------------------------------------------


def write_batch(path, n, seed, protocol=2, key=bytes):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8)
    labels = rng.integers(0, 3, n).tolist()
    batch = {key(b"data"): data, key(b"labels"): labels, key(b"batch_label"): key(b"x")}
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=protocol)
    return data, labels


@pytest.mark.parametrize(
    "protocol, key",
    [(2, bytes), (pickle.HIGHEST_PROTOCOL, bytes.decode)],
    ids=["protocol-2-bytes-keys", "newest-protocol-str-keys"],
)
def test_cifar_style_batches_are_read_in_numeric_order_with_their_names(tmp_path, protocol, key):
    parts = {i: write_batch(tmp_path / f"data_batch_{i}", 4, i, protocol, key) for i in (1, 2, 10)}
    test_data, test_labels = write_batch(tmp_path / "test_batch", 3, 99, protocol, key)
    with open(tmp_path / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [b"plane", b"car", b"bird"]}, f, protocol=2)
    assert detect(tmp_path) == "cifar-pickle"
    source = load_cifar(tmp_path)
    assert source.classes == ("plane", "car", "bird") and source.pool == (12, 3)
    assert source.train_x.shape == (12, 3, 32, 32) and source.channels == 3
    assert np.array_equal(source.train_x[8].reshape(-1), parts[10][0][0])
    assert np.array_equal(source.test_x.reshape(3, -1), test_data)
    assert source.test_y.tolist() == test_labels
    assert sorted(source.files) == ["batches.meta", "data_batch_1", "data_batch_10"] + [
        "data_batch_2",
        "test_batch",
    ]


class Payload:
    def __reduce__(self):
        return (print, ("a pickle ran code",))


def test_a_batch_that_would_run_code_is_refused(tmp_path, capsys):
    write_batch(tmp_path / "data_batch_1", 2, 0)
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": Payload(), b"labels": [0]}, f)
    with pytest.raises(DataError, match="test_batch is not a CIFAR-style pickle batch: .*print"):
        load_cifar(tmp_path)
    assert "a pickle ran code" not in capsys.readouterr().out


# -- the split and the settings ----------------------------------------------------------------


def test_the_split_keeps_the_test_set_and_pads_28_to_32(tmp_path):
    source = load_idx(fashion_folder(tmp_path / "d", 300, 200, gz=False), FASHION_CLASSES)
    s = image_settings_for("fashion-mnist", pool=source.pool)
    assert (s.n_train, s.n_test, s.epochs, s.seeds) == (300, 200, 4, 5)
    quick = image_settings_for("fashion-mnist", quick=True, pool=source.pool)
    assert (quick.n_train, quick.n_test, quick.epochs, quick.seeds) == (256, 200, 1, 1)
    data = load_images(quick, source)
    assert data.train_x.shape == (256, 1, 32, 32) and data.test_x.shape == (200, 1, 32, 32)
    assert (data.channels, data.classes) == (1, 10)
    # Every test image is one of the data set's test images, each once.
    assert sorted(data.test_y.tolist()) == sorted(source.test_y.tolist())
    assert data.train_x[:, :, :2].abs().sum() == 0 and data.train_x[:, :, :, 30:].abs().sum() == 0
    assert data.record["available"] == {"train": 300, "test": 200}
    assert data.record["input"] == [1, 32, 32] and data.record["format"] == "idx"
    assert load_images(quick, source).record["digest"] == data.record["digest"]
    full = image_settings_for("fashion-mnist", pool=(60000, 10000))
    assert (full.n_train, full.n_test, full.epochs, full.seeds) == (15000, 10000, 4, 5)


def test_sizes_are_checked_against_the_data_found():
    with pytest.raises(ValueError, match="--train-size 301 is too large: the training set of"):
        image_settings_for("fashion-mnist", train_size=301, pool=(300, 200))
    with pytest.raises(ValueError, match="--test-size 201 is too large: the test set of"):
        image_settings_for("fashion-mnist", test_size=201, pool=(300, 200))
    with pytest.raises(ValueError, match="--test-size must be at least 1"):
        image_settings_for("folder", test_size=0, pool=(300, 200))


def test_larger_images_are_resized_and_odd_margins_padded():
    big = np.full((2, 3, 64, 48), 255, np.uint8)
    assert to_size(big, 32).shape == (2, 3, 32, 32) and float(to_size(big, 32).min()) == 1.0
    small = to_size(np.full((1, 1, 27, 27), 255, np.uint8), 32)
    assert small[0, 0, 2:29, 2:29].min() == 1 and small.sum() == 27 * 27


# -- the command -------------------------------------------------------------------------------


@pytest.mark.slow
def test_quick_fashion_mnist_runs_on_generated_idx_files(tmp_path):
    data = fashion_folder(tmp_path / "fashion")
    out = tmp_path / "out"
    result = run_optgen(
        "experiment", "fashion-mnist", "--quick", "--data", str(data),
        "--networks", "iso_convnext_gd", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "fashion-mnist.json").read_text())
    assert report["complete"] is True and report["experiment"] == "fashion-mnist"
    assert report["data"]["classes"] == list(FASHION_CLASSES)
    assert report["data"]["path"] == str(data) and report["data"]["format"] == "idx"
    assert report["data"]["available"] == {"train": 300, "test": 200}
    assert sum(report["data"]["test_class_counts"]) == 200
    assert sorted(report["data"]["files"]) == sorted(p.name for p in data.iterdir())
    settings = report["settings"]
    assert (settings["n_train"], settings["n_test"], settings["epochs"]) == (256, 200, 1)
    metrics = report["networks"]["iso_convnext_gd"]["metrics"]
    assert 0 <= metrics["test_error"]["mean"] <= 1 and math.isfinite(metrics["test_loss"]["mean"])
    assert "fashion-mnist iso_convnext_gd: test error" in result.stdout
    assert (out / "fashion-mnist.png").read_bytes()[:8] == PNG


@pytest.mark.slow
def test_folder_trains_on_rgb_cifar_batches_with_their_classes(tmp_path):
    data = tmp_path / "cifar"
    data.mkdir()
    write_batch(data / "data_batch_1", 40, 1)
    write_batch(data / "test_batch", 20, 2)
    out = tmp_path / "out"
    result = run_optgen(
        "experiment", "folder", "--quick", "--data", str(data), "--batch", "8",
        "--networks", "iso_convnext_gd", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "folder.json").read_text())
    assert report["data"]["input"] == [3, 32, 32] and report["data"]["format"] == "cifar-pickle"
    assert report["data"]["classes"] == ["0", "1", "2"]
    assert len(report["data"]["train_class_counts"]) == 3
    assert (report["settings"]["n_train"], report["settings"]["n_test"]) == (40, 20)


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["fashion-mnist", "--data", "{tmp}/nowhere"],
            "optgen: error: no Fashion-MNIST: --data {tmp}/nowhere: no such folder. Install"
            " Debian's package (apt-get install dataset-fashion-mnist, which puts it in"
            " /usr/share/datasets/fashion-mnist) or give --data DIR",
        ),
        (
            ["fashion-mnist", "--data", "{tmp}"],
            "optgen: error: no Fashion-MNIST: {tmp} has no train-images-idx3-ubyte[.gz],"
            " train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz],"
            " t10k-labels-idx1-ubyte[.gz]. Install Debian's package (apt-get install"
            " dataset-fashion-mnist",
        ),
        (["folder"], "optgen: error: optgen experiment folder needs --data DIR"),
        (["folder", "--data", "{tmp}"], "holds no data set this experiment reads"),
        (["mnist", "--data", "{tmp}"], "optgen: error: --data: only for the fashion-mnist and"),
        (["rings", "--data", "{tmp}"], "optgen: error: --data: only for the image experiments"),
    ],
)
def test_missing_data_is_a_clear_error_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "out"
    args = [a.format(tmp=tmp_path) for a in args]
    result = run_optgen("experiment", *args, "--quick", "--out", str(out))
    assert result.returncode == 1
    assert message.format(tmp=tmp_path) in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == "" and not out.exists()


@pytest.mark.skipif(DEBIAN_FOLDER.is_dir(), reason="Debian's dataset-fashion-mnist is installed")
def test_without_the_package_the_default_folder_names_it():
    with pytest.raises(DataError) as err:
        load_source("fashion-mnist", None)
    text = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in text and "--data DIR" in text
    assert str(DEBIAN_FOLDER) in text
