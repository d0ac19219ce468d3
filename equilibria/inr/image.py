"""Images for implicit representations: loading, cropping to a square, coordinates and PSNR.

An image is a float tensor of shape (height, width, 3) with values in [0, 1]. The default image is
the photo scikit-learn bundles (`china.jpg`), or scikit-image's `camera()` when scikit-image is
installed and asked for; any PNG or JPEG file is read with Pillow.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import EquilibriaError
from ..extras import require

SAMPLE_IMAGES = ("china", "camera")
DEFAULT_IMAGE = "china"


class ImageError(EquilibriaError, ValueError):
    """An image that cannot be used: missing, unreadable, not an image, or too small."""


@dataclass(frozen=True)
class Image:
    """Pixels (height, width, 3) in [0, 1] and where they came from."""

    pixels: torch.Tensor
    source: str

    @property
    def size(self) -> tuple[int, int]:
        return int(self.pixels.shape[0]), int(self.pixels.shape[1])


def _to_rgb(array: np.ndarray, source: str) -> torch.Tensor:
    """uint8 (H, W), (H, W, 3) or (H, W, 4) as float RGB in [0, 1]."""
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ImageError(f"{source} has pixel array shape {array.shape}; expected grey or RGB(A)")
    return torch.from_numpy(np.array(array[:, :, :3], dtype=np.float32)) / 255.0


def sample_image(name: str = DEFAULT_IMAGE) -> Image:
    """A bundled photo: "china" (scikit-learn) or "camera" (scikit-image, if installed)."""
    if name == "china":
        datasets = require("sklearn.datasets", "the default image (scikit-learn's china.jpg)")
        return Image(_to_rgb(datasets.load_sample_image("china.jpg"), "china.jpg"), "china.jpg")
    if name == "camera":
        try:
            data = importlib.import_module("skimage.data")
        except ImportError:
            raise ImageError(
                "the sample image 'camera' comes from scikit-image, which is not installed; "
                "install it (pip install scikit-image), or use the default image (china) or an "
                "image file"
            ) from None
        return Image(_to_rgb(np.asarray(data.camera()), "camera"), "skimage camera()")
    raise ImageError(f"unknown sample image {name!r}; choose one of {', '.join(SAMPLE_IMAGES)}")


def read_image(path: str | Path) -> Image:
    """A PNG or JPEG (any format Pillow reads) as RGB; clear errors for bad paths and files."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ImageError(f"no image at {path}: the file does not exist")
    if path.is_dir():
        raise ImageError(f"{path} is a folder; give the path of a PNG or JPEG file")
    pil = require("PIL.Image", "reading image files (Pillow)")
    try:
        with pil.open(path) as opened:
            rgb = opened.convert("RGB")
            rgb.load()
    except PermissionError:
        raise ImageError(f"{path} cannot be read: permission denied") from None
    except (pil.UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ImageError(
            f"{path} is not a readable image (Pillow: {reason[:160]}); give a PNG or JPEG file"
        ) from None
    return Image(_to_rgb(np.asarray(rgb), str(path)), str(path))


def load_image(source: str | Path | None = None) -> Image:
    """A sample image by name (None: the default) or an image file by path."""
    if source is None:
        return sample_image(DEFAULT_IMAGE)
    if isinstance(source, str) and source in SAMPLE_IMAGES and not Path(source).exists():
        return sample_image(source)
    return read_image(source)


def square(image: Image, size: int, *, resize: bool = False) -> Image:
    """The central `size` x `size` crop, or (`resize`) the central square scaled to `size`.

    Cropping keeps the image's own detail; resizing (area averaging) shows all of it.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 2:
        raise ImageError(f"size must be an integer >= 2 (pixels per side), got {size!r}")
    height, width = image.size
    side = min(height, width)
    if not resize and side < size:
        raise ImageError(
            f"{image.source} is {width}x{height} pixels, too small for a {size}x{size} crop; "
            f"use a size of at most {side}, or resize"
        )
    crop = size if not resize else side
    top, left = (height - crop) // 2, (width - crop) // 2
    pixels = image.pixels[top : top + crop, left : left + crop]
    if resize and crop != size:
        channels_first = pixels.permute(2, 0, 1)[None]
        mode = "area" if crop > size else "bilinear"
        extra = {} if mode == "area" else {"align_corners": False}
        scaled = torch.nn.functional.interpolate(
            channels_first, size=(size, size), mode=mode, **extra
        )
        pixels = scaled[0].permute(1, 2, 0).clamp(0.0, 1.0)
    return Image(pixels.contiguous(), image.source)


def pixel_grid(height: int, width: int) -> torch.Tensor:
    """(height * width, 2) coordinates (x, y) of the pixel centres in [-1, 1], row by row."""
    ys = (torch.arange(height, dtype=torch.float32) + 0.5) / height * 2 - 1
    xs = (torch.arange(width, dtype=torch.float32) + 0.5) / width * 2 - 1
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y], dim=-1).reshape(-1, 2)


def psnr(prediction: torch.Tensor, target: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB for values in [0, 1] (prediction clipped to [0, 1])."""
    mse = float((prediction.detach().clamp(0, 1) - target).pow(2).mean())
    return math.inf if mse == 0 else -10.0 * math.log10(mse)


def psnr_of_mse(mse: float) -> float:
    """PSNR in dB of a mean squared error on [0, 1] values."""
    return math.inf if mse <= 0 else -10.0 * math.log10(mse)
