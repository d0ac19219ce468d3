"""CIFAR-10 from the standard python-pickle batches, downloaded when missing and online."""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np
import torch

from .base import DataFormatError, DataNotFoundError, ImageData, ImageSplit, image_data
from .download import fetch

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES = ("test_batch",)
IMAGE_SHAPE = (3, 32, 32)

# what a CIFAR batch may reference: numpy's array reconstruction and nothing else
ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a data file cannot run code."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"a CIFAR batch may not reference {module}.{name}")


def read_batch(path: Path) -> ImageSplit:
    """One CIFAR-10 batch file: a pickled dict with b"data" (n, 3072) uint8 and b"labels"."""
    try:
        with open(path, "rb") as stream:
            batch = _BatchUnpickler(stream, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise DataFormatError(f"{path} is not a CIFAR-10 python batch: {error}") from None
    if not isinstance(batch, dict):
        raise DataFormatError(f"{path} holds a {type(batch).__name__}, not a CIFAR-10 batch dict")
    batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise DataFormatError(
            f"{path} lacks the keys 'data' and 'labels' of a CIFAR-10 batch "
            f"(found {', '.join(map(str, batch)) or 'none'})"
        )
    data = np.asarray(batch["data"])
    labels = np.asarray(batch["labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != int(np.prod(IMAGE_SHAPE)):
        raise DataFormatError(
            f"{path}: 'data' is {data.dtype} of shape {data.shape}; CIFAR-10 batches hold "
            "uint8 rows of 3072 values (1024 red, 1024 green, 1024 blue)"
        )
    if labels.shape != (data.shape[0],) or labels.min(initial=0) < 0 or labels.max(initial=0) > 9:
        raise DataFormatError(
            f"{path}: 'labels' must be {data.shape[0]} integers in 0..9, got shape {labels.shape}"
        )
    images = torch.from_numpy(data.reshape(-1, *IMAGE_SHAPE).copy())
    return ImageSplit(images, torch.from_numpy(labels))


def _extract(archive: Path, folder: Path) -> None:
    """Unpack the batches folder of the official archive into `folder`."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(f"{FOLDER}/")]
            for member in members:
                if not member.isfile() or ".." in Path(member.name).parts:
                    continue
                target = folder / member.name
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as source:
                    target.write_bytes(source.read())
    except (tarfile.TarError, OSError, EOFError) as error:
        raise DataFormatError(f"{archive} is not a readable CIFAR-10 archive: {error}") from None


def batches_folder(data_dir: Path, *, download: bool) -> Path:
    """The folder holding the six batch files, extracted from the archive if needed."""
    candidates = [data_dir / FOLDER, data_dir]
    names = TRAIN_BATCHES + TEST_BATCHES
    for folder in candidates:
        if (folder / names[0]).is_file() or (folder / TEST_BATCHES[0]).is_file():
            missing = [n for n in names if not (folder / n).is_file()]
            if missing:
                raise DataNotFoundError(
                    f"the CIFAR-10 batches in {folder} are incomplete: {', '.join(missing)} "
                    f"missing; put all of {', '.join(names)} there or delete the folder to "
                    "download them again"
                )
            return folder
    archive = fetch(
        "the CIFAR-10 data",
        data_dir,
        [ARCHIVE],
        [URL],
        allow_download=download,
        instructions=(
            f"Put the python version of CIFAR-10 ({ARCHIVE} or its extracted folder {FOLDER} "
            f"with {', '.join(names)}) in {data_dir} (data.data_dir / --data-dir), or run once "
            "with internet access."
        ),
    )
    _extract(archive, data_dir)
    if not all((data_dir / FOLDER / n).is_file() for n in names):
        raise DataFormatError(f"{archive} does not contain the CIFAR-10 batches {', '.join(names)}")
    return data_dir / FOLDER


def _concat(splits: list[ImageSplit]) -> ImageSplit:
    return ImageSplit(torch.cat([s.images for s in splits]), torch.cat([s.labels for s in splits]))


def load_cifar10(data_dir: Path, *, download: bool = True) -> ImageData:
    """CIFAR-10: 50000 training and 10000 test colour images of 32 x 32."""
    data_dir = Path(data_dir).expanduser()
    folder = batches_folder(data_dir, download=download)
    return image_data(
        "cifar10",
        _concat([read_batch(folder / name) for name in TRAIN_BATCHES]),
        _concat([read_batch(folder / name) for name in TEST_BATCHES]),
        classes=10,
        max_value=255,
        description="CIFAR-10 (32x32 colour), the standard 50000 / 10000 split",
    )
