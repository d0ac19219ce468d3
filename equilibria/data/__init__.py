"""Image classification data: scikit-learn's digits (bundled), MNIST and CIFAR-10 (files).

Character-level text for language models lives in `text` (`load_text`).

`load_data(name, data_dir, download)` returns an `ImageData` with uint8 images held in memory.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..errors import check_choice
from .augment import random_flip, random_shift
from .base import DataFormatError, DataNotFoundError, ImageData, ImageSplit, image_data
from .cifar import load_cifar10, read_batch
from .digits import load_digits
from .idx import read_idx, write_idx
from .mnist import load_mnist, load_mnist_t10k
from .text import TextData, Vocabulary, load_text

DATASETS: dict[str, Callable[..., ImageData]] = {
    "digits": lambda data_dir, download: load_digits(),
    "mnist": load_mnist,
    "mnist-t10k": load_mnist_t10k,
    "cifar10": load_cifar10,
}


def load_data(name: str, data_dir: str | Path, *, download: bool = True) -> ImageData:
    """The data set `name` (one of `DATASETS`), reading files from `data_dir` when it needs any."""
    check_choice("dataset", name, DATASETS)
    return DATASETS[name](Path(data_dir).expanduser(), download=download)


__all__ = [
    "DATASETS",
    "DataFormatError",
    "DataNotFoundError",
    "ImageData",
    "ImageSplit",
    "image_data",
    "load_cifar10",
    "load_data",
    "load_digits",
    "load_mnist",
    "load_mnist_t10k",
    "random_flip",
    "random_shift",
    "read_batch",
    "read_idx",
    "write_idx",
    "TextData",
    "Vocabulary",
    "load_text",
]
