"""Data loaders: digits split, IDX and CIFAR formats on files written here, offline errors."""

import gzip
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from equilibria.data import (
    DataFormatError,
    DataNotFoundError,
    cifar,
    download,
    load_cifar10,
    load_data,
    load_mnist,
    load_mnist_t10k,
    mnist,
    random_flip,
    random_shift,
    read_batch,
    read_idx,
    write_idx,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MNIST_T10K_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
UNREACHABLE = "http://127.0.0.1:9/"  # the discard port: the connection is refused at once


def test_digits_split_is_fixed_stratified_and_normalized():
    data = load_data("digits", "unused")
    again = load_data("digits", "unused")
    assert (len(data.train), len(data.test)) == (1442, 355)
    assert data.shape == (1, 8, 8) and data.classes == 10 and data.max_value == 16
    assert torch.equal(data.test.images, again.test.images)
    counts = data.test.labels.bincount()
    assert counts.min() >= 34 and counts.max() <= 36
    x = data.inputs(data.train.images)
    assert abs(float(x.mean())) < 1e-5 and abs(float(x.std()) - 1) < 1e-3
    train_rows = {tuple(r.tolist()) for r in data.train.images.flatten(1)}
    test_rows = [tuple(r.tolist()) for r in data.test.images.flatten(1)]
    assert sum(r in train_rows for r in test_rows) < 5  # a few digits repeat in the raw data


def test_digits_read_from_the_bundled_file_equal_scikit_learns_loader(monkeypatch):
    from sklearn.datasets import load_digits as sklearn_digits

    from equilibria.data import digits

    assert digits.bundled_digits_file() is not None  # read without importing scikit-learn
    images, labels = digits.digits_arrays()
    bunch = sklearn_digits()
    assert np.array_equal(images, bunch.images) and np.array_equal(labels, bunch.target)
    # a scikit-learn that keeps the file elsewhere: its loader reads the same data
    monkeypatch.setattr(digits, "BUNDLED_FILE", ("no", "such", "file.csv.gz"))
    assert digits.bundled_digits_file() is None
    moved_images, moved_labels = digits.digits_arrays()
    assert np.array_equal(moved_images, images) and np.array_equal(moved_labels, labels)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path, compress):
    array = np.random.default_rng(0).integers(0, 256, (5, 3, 4), dtype=np.uint8)
    path = tmp_path / "a.idx"
    write_idx(path, array, compress=compress)
    assert torch.equal(read_idx(path), torch.from_numpy(array))


def test_idx_errors_name_the_file_and_the_problem(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(b"\x08\x03\x00\x01abc")
    with pytest.raises(DataFormatError, match="not an IDX file"):
        read_idx(path)
    write_idx(path, np.zeros((4, 2), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(DataFormatError, match=r"promises shape \(4, 2\).*truncated"):
        read_idx(path)
    path.write_bytes(b"\x00\x00\x0d\x01\x00\x00\x00\x01abcd")
    with pytest.raises(DataFormatError, match="type code 0x0d"):
        read_idx(path)


def write_mnist(folder: Path, split: str, count: int, *, compress: bool, prefix: str = "") -> None:
    rng = np.random.default_rng(count)
    images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
    labels = np.arange(count, dtype=np.uint8) % 10
    folder.mkdir(parents=True, exist_ok=True)
    for kind, array in (("images", images), ("labels", labels)):
        stem = prefix + mnist.FILES[(split, kind)]
        write_idx(folder / (stem + (".gz" if compress else "")), array, compress=compress)


def test_mnist_from_plain_and_gzipped_files_in_any_standard_layout(tmp_path):
    write_mnist(tmp_path, "train", 30, compress=True)
    write_mnist(tmp_path / "MNIST" / "raw", "test", 20, compress=False, prefix="mnist-")
    data = load_mnist(tmp_path, download=False)
    assert (len(data.train), len(data.test), data.shape) == (30, 20, (1, 28, 28))
    assert data.train.labels.tolist() == [i % 10 for i in range(30)]
    assert data.max_value == 255 and data.classes == 10


def test_mnist_label_count_mismatch_is_explained(tmp_path):
    write_mnist(tmp_path, "test", 20, compress=False)
    write_idx(tmp_path / mnist.FILES[("test", "labels")], np.zeros(19, dtype=np.uint8))
    with pytest.raises(DataFormatError, match="19,.*labels for 20 images"):
        load_mnist_t10k(tmp_path, download=False)


def test_missing_mnist_offline_says_what_where_and_how(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist, "MIRRORS", (UNREACHABLE,))
    with pytest.raises(DataNotFoundError) as error:
        load_mnist(tmp_path / "data", download=True)
    message = str(error.value)
    assert "train images (train-images-idx3-ubyte) not found" in message
    assert str(tmp_path / "data") in message and "download failed" in message
    assert UNREACHABLE in message and "Put the standard MNIST files" in message
    assert not list((tmp_path / "data").glob("*part"))  # no partial file left behind
    with pytest.raises(DataNotFoundError, match="downloading is off"):
        load_mnist(tmp_path, download=False)


def test_download_fetches_from_the_first_mirror_that_answers(tmp_path, monkeypatch):
    source = tmp_path / "mirror"
    write_mnist(source, "test", 50, compress=True)
    monkeypatch.setattr(mnist, "MIRRORS", (UNREACHABLE, source.as_uri() + "/"))
    data = load_mnist_t10k(tmp_path / "data", download=True)
    assert (len(data.train), len(data.test)) == (40, 10)
    assert (tmp_path / "data" / "t10k-images-idx3-ubyte.gz").is_file()


@pytest.mark.skipif(not SHARED.is_dir(), reason="the shared MNIST test set is not present")
def test_real_mnist_test_set_split_8k_2k():
    data = load_mnist_t10k(SHARED, download=False)
    assert (len(data.train), len(data.test)) == (8004, 1996)
    counts = (data.train.labels.bincount() + data.test.labels.bincount()).tolist()
    assert counts == MNIST_T10K_COUNTS
    assert data.train.images.shape[1:] == (1, 28, 28) and 0.1 < data.mean[0] < 0.2


def write_cifar_batch(path: Path, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (count, 3072), dtype=np.uint8)
    batch = {
        b"batch_label": b"test",
        b"labels": [i % 10 for i in range(count)],
        b"data": data,
        b"filenames": [b"x.png"] * count,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as stream:
        pickle.dump(batch, stream, protocol=2)
    return data


def write_cifar(folder: Path) -> np.ndarray:
    for i, name in enumerate(cifar.TRAIN_BATCHES):
        write_cifar_batch(folder / name, 4, i)
    return write_cifar_batch(folder / "test_batch", 3, 99)


def test_cifar_batches_are_read_channel_planes_first(tmp_path):
    raw = write_cifar(tmp_path / cifar.FOLDER)
    data = load_cifar10(tmp_path, download=False)
    assert (len(data.train), len(data.test), data.shape) == (20, 3, (3, 32, 32))
    # row layout: 1024 red values, then green, then blue, each row-major 32 x 32
    assert int(data.test.images[1, 1, 2, 5]) == int(raw[1, 1024 + 2 * 32 + 5])
    assert data.test.labels.tolist() == [0, 1, 2]


def test_cifar_from_the_archive_and_incomplete_folders(tmp_path):
    write_cifar(tmp_path / "src" / cifar.FOLDER)
    with tarfile.open(tmp_path / cifar.ARCHIVE, "w:gz") as tar:
        tar.add(tmp_path / "src" / cifar.FOLDER, arcname=cifar.FOLDER)
    assert len(load_cifar10(tmp_path, download=False).train) == 20
    (tmp_path / cifar.FOLDER / "data_batch_3").unlink()
    with pytest.raises(DataNotFoundError, match="incomplete: data_batch_3 missing"):
        load_cifar10(tmp_path, download=False)


def test_cifar_batch_cannot_run_code_and_bad_content_is_named(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil"
    evil.write_bytes(pickle.dumps({b"data": Exploit()}))
    with pytest.raises(DataFormatError, match="may not reference builtins.print"):
        read_batch(evil)
    wrong = tmp_path / "wrong"
    wrong.write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DataFormatError, match="rows of 3072 values"):
        read_batch(wrong)
    with pytest.raises(DataFormatError, match="lacks the keys"):
        evil.write_bytes(pickle.dumps({b"images": 1}))
        read_batch(evil)


def test_missing_cifar_offline_is_explained(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar, "URL", UNREACHABLE + cifar.ARCHIVE)
    with pytest.raises(DataNotFoundError, match="CIFAR-10 data not found.*download failed"):
        load_cifar10(tmp_path, download=True)


def test_unknown_dataset_lists_the_valid_ones():
    with pytest.raises(ValueError, match="choose one of digits, mnist, mnist-t10k, cifar10"):
        load_data("imagenet", ".")


def test_random_shift_moves_whole_images_and_fills_the_border():
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).reshape(2, 3, 5, 5)
    torch.manual_seed(3)
    shifted = random_shift(x, 2, fill=torch.tensor([-1.0, -2.0, -3.0]))
    for i in range(2):
        matches = []
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                expected = torch.full_like(x[i], 0) + torch.tensor([-1.0, -2.0, -3.0]).view(3, 1, 1)
                src = x[i][:, max(dy, 0) : 5 + min(dy, 0), max(dx, 0) : 5 + min(dx, 0)]
                expected[:, max(-dy, 0) : 5 + min(-dy, 0), max(-dx, 0) : 5 + min(-dx, 0)] = src
                matches.append(torch.equal(shifted[i], expected))
        assert sum(matches) == 1
    assert torch.equal(random_shift(x, 0), x)


def test_random_flip_mirrors_some_images():
    x = torch.randn(64, 1, 4, 4)
    flipped = random_flip(x)
    same = [torch.equal(a, b) for a, b in zip(flipped, x, strict=True)]
    mirrored = [torch.equal(a, b.flip(2)) for a, b in zip(flipped, x, strict=True)]
    assert all(s or m for s, m in zip(same, mirrored, strict=True))
    assert 10 < sum(mirrored) < 54


def test_gzip_is_detected_from_content_not_name(tmp_path):
    path = tmp_path / "labels-without-suffix"
    with gzip.open(path, "wb") as stream:
        stream.write(b"\x00\x00\x08\x01\x00\x00\x00\x02\x07\x03")
    assert read_idx(path).tolist() == [7, 3]
    assert download.find_file([tmp_path], ["nothing", path.name]) == path
