"""Image classification data held in memory: 8-bit images, labels and their normalization."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..errors import EquilibriaError


class DataNotFoundError(EquilibriaError, FileNotFoundError):
    """Files of a data set are missing and could not be downloaded."""


class DataFormatError(EquilibriaError, ValueError):
    """A data file exists but does not hold what its format promises."""


@dataclass(frozen=True)
class ImageSplit:
    """One split: `images` (n, channels, height, width) uint8 and `labels` (n,) int64."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataFormatError(
                f"images must be a uint8 tensor (n, channels, height, width), got "
                f"{self.images.dtype} of shape {tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.shape != self.images.shape[:1]:
            raise DataFormatError(
                f"labels must be int64 of shape ({self.images.shape[0]},), got "
                f"{self.labels.dtype} of shape {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return self.labels.shape[0]

    def subset(self, mask: torch.Tensor) -> ImageSplit:
        """The samples where the boolean `mask` is true."""
        return ImageSplit(self.images[mask].contiguous(), self.labels[mask].contiguous())


@dataclass(frozen=True)
class ImageData:
    """A train / test pair with what a model needs to know about it.

    Attributes:
        name: the data set's name (as in the config).
        train, test: the two splits.
        classes: number of classes (labels are 0 .. classes - 1).
        max_value: the largest pixel value of the format (16 for digits, 255 for 8-bit images).
        mean, std: per-channel statistics of the training images scaled to [0, 1].
        description: one line saying what it is and how it was split.
    """

    name: str
    train: ImageSplit
    test: ImageSplit
    classes: int
    max_value: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    description: str

    def with_train_samples(self, count: int | None) -> ImageData:
        """A copy training on the first `count` training samples only (None: all of them).

        The normalization stays that of the full training split, so results stay comparable."""
        if count is None or count >= len(self.train):
            return self
        keep = torch.arange(len(self.train)) < count
        return dataclasses.replace(self, train=self.train.subset(keep))

    @property
    def shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one image."""
        return tuple(self.train.images.shape[1:])

    def inputs(self, images: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
        """uint8 images as float32 model inputs on `device`, normalized per channel."""
        x = images.to(device=device, dtype=torch.float32, non_blocking=True)
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return (x / self.max_value - mean) / std

    def black(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """A black pixel after normalization, per channel: what a shifted image is filled with."""
        return torch.tensor(
            [-m / s for m, s in zip(self.mean, self.std, strict=True)], device=device
        )


def image_data(
    name: str,
    train: ImageSplit,
    test: ImageSplit,
    *,
    classes: int,
    max_value: int,
    description: str,
) -> ImageData:
    """An `ImageData` whose normalization is computed from the training split."""
    if train.images.shape[1:] != test.images.shape[1:]:
        raise DataFormatError(
            f"{name}: train images are {tuple(train.images.shape[1:])} but test images are "
            f"{tuple(test.images.shape[1:])}"
        )
    for split_name, split in (("train", train), ("test", test)):
        if len(split) == 0:
            raise DataFormatError(f"{name}: the {split_name} split is empty")
        low, high = int(split.labels.min()), int(split.labels.max())
        if low < 0 or high >= classes:
            raise DataFormatError(
                f"{name}: {split_name} labels span {low}..{high}, expected 0..{classes - 1}"
            )
    scaled = train.images.double() / max_value
    mean = scaled.mean(dim=(0, 2, 3))
    std = scaled.std(dim=(0, 2, 3)).clamp_min(1e-6)
    return ImageData(
        name=name,
        train=train,
        test=test,
        classes=classes,
        max_value=max_value,
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
        description=description,
    )


def stratified_split(labels: torch.Tensor, every: int = 5) -> torch.Tensor:
    """Boolean test mask holding out every `every`-th sample of each class, in file order.

    Within each class, the samples are counted in the order they appear; sample number k of its
    class (from 0) is a test sample when k % every == every - 1. No randomness is involved.
    """
    mask = torch.zeros(labels.shape[0], dtype=torch.bool)
    for label in labels.unique():
        members = (labels == label).nonzero().flatten()
        mask[members[every - 1 :: every]] = True
    return mask
