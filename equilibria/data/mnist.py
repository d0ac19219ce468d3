"""MNIST from the standard IDX files (gzipped or not), downloaded when missing and online."""

from __future__ import annotations

from pathlib import Path

import torch

from .base import DataFormatError, ImageData, ImageSplit, image_data, stratified_split
from .download import fetch
from .idx import read_idx

MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}
T10K_TEST_EVERY = 5  # "mnist-t10k": every fifth test image of each class is held out


def mnist_file(data_dir: Path, split: str, kind: str, *, download: bool) -> Path:
    """Path of one of the four MNIST files, found under `data_dir` or downloaded there."""
    stem = FILES[(split, kind)]
    names = [f"{stem}.gz", stem, f"mnist-{stem}.gz", f"mnist-{stem}"]
    return fetch(
        f"the MNIST {split} {kind} ({stem})",
        data_dir,
        names,
        [mirror + f"{stem}.gz" for mirror in MIRRORS],
        allow_download=download,
        search=(data_dir / "mnist", data_dir / "MNIST" / "raw"),
        instructions=(
            f"Put the standard MNIST files ({', '.join(FILES.values())}, gzipped or not) in "
            f"{data_dir} (data.data_dir / --data-dir), or run once with internet access."
        ),
    )


def read_mnist_split(data_dir: Path, split: str, *, download: bool) -> ImageSplit:
    """The images and labels of the MNIST `split` ("train" or "test")."""
    images_path = mnist_file(data_dir, split, "images", download=download)
    labels_path = mnist_file(data_dir, split, "labels", download=download)
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dim() != 3:
        raise DataFormatError(
            f"{images_path} holds an array of shape {tuple(images.shape)}; MNIST images are "
            "(count, rows, columns)"
        )
    if labels.dim() != 1 or labels.shape[0] != images.shape[0]:
        raise DataFormatError(
            f"{labels_path} holds {tuple(labels.shape)} labels for {images.shape[0]} images "
            f"in {images_path}"
        )
    if int(labels.max()) > 9:
        raise DataFormatError(f"{labels_path} holds label {int(labels.max())}; MNIST has 0..9")
    return ImageSplit(images.unsqueeze(1).contiguous(), labels.to(torch.int64))


def load_mnist(data_dir: Path, *, download: bool = True) -> ImageData:
    """The standard MNIST split: 60000 training and 10000 test images."""
    data_dir = Path(data_dir).expanduser()
    return image_data(
        "mnist",
        read_mnist_split(data_dir, "train", download=download),
        read_mnist_split(data_dir, "test", download=download),
        classes=10,
        max_value=255,
        description="MNIST (28x28 grey), the standard 60000 / 10000 split",
    )


def load_mnist_t10k(data_dir: Path, *, download: bool = True) -> ImageData:
    """Only MNIST's 10000-image test set, split 8004 train / 1996 test (stratified, fixed)."""
    data_dir = Path(data_dir).expanduser()
    everything = read_mnist_split(data_dir, "test", download=download)
    test = stratified_split(everything.labels, T10K_TEST_EVERY)
    return image_data(
        "mnist-t10k",
        everything.subset(~test),
        everything.subset(test),
        classes=10,
        max_value=255,
        description=(
            "the MNIST test set alone (28x28 grey): every "
            f"{T10K_TEST_EVERY}th image of each class, in file order, held out for testing"
        ),
    )
