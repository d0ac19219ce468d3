"""scikit-learn's handwritten digits: 1797 real 8 x 8 images in 17 grey levels, no download."""

from __future__ import annotations

import torch

from ..extras import require
from .base import ImageData, ImageSplit, image_data, stratified_split

TEST_EVERY = 5  # every fifth sample of each class (in file order) is held out: 1442 / 355


def load_digits() -> ImageData:
    """The digits data set with its fixed split (every fifth sample of each class is a test one)."""
    datasets = require("sklearn.datasets", "the digits data set")
    bunch = datasets.load_digits()
    images = torch.as_tensor(bunch.images).round().to(torch.uint8).unsqueeze(1)
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
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
