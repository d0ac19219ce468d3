"""scikit-learn's handwritten digits: 1797 real 8 x 8 images in 17 grey levels, no download."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from ..extras import require, require_installed
from .base import ImageData, ImageSplit, image_data, stratified_split

TEST_EVERY = 5  # every fifth sample of each class (in file order) is held out: 1442 / 355
PURPOSE = "the digits data set"
# where scikit-learn keeps the data of `sklearn.datasets.load_digits`: 1797 rows of 64 pixels
# and the label, comma separated
BUNDLED_FILE = ("datasets", "data", "digits.csv.gz")


def bundled_digits_file() -> Path | None:
    """scikit-learn's digits file, found without importing scikit-learn (whose import takes
    seconds); None when this version keeps it elsewhere."""
    require_installed("sklearn", PURPOSE)
    spec = importlib.util.find_spec("sklearn")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder).joinpath(*BUNDLED_FILE)
        if path.is_file():
            return path
    return None


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Images (1797, 8, 8) and labels (1797,) as `sklearn.datasets.load_digits` gives them,
    read straight from scikit-learn's bundled file when it is where it has always been."""
    path = bundled_digits_file()
    if path is None:
        bunch = require("sklearn.datasets", PURPOSE).load_digits()
        return bunch.images, bunch.target
    table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1]


def load_digits() -> ImageData:
    """The digits data set with its fixed split (every fifth sample of each class is a test one)."""
    pixels, targets = digits_arrays()
    images = torch.as_tensor(pixels).round().to(torch.uint8).unsqueeze(1)
    labels = torch.as_tensor(targets, dtype=torch.int64)
    everything = ImageSplit(images, labels)
    test = stratified_split(everything.labels, TEST_EVERY)
    return image_data(
        "digits",
        everything.subset(~test),
        everything.subset(test),
        classes=10,
        max_value=16,
        description=(
            "scikit-learn digits (UCI optdigits test set, 8x8, values 0-16); "
            f"every {TEST_EVERY}th sample of each class, in file order, is held out for testing"
        ),
    )
