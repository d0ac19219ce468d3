"""Fitting implicit neural representations to images: loading, the full-batch fit, its outputs.

`equilibria fit-image` is the command line of this package; `fit` and `ImageFit` are its
library face.
"""

from .fit import FitResult, ImageFit, build_inr, fit
from .image import Image, ImageError, load_image, pixel_grid, psnr, square
from .outputs import write_outputs
from .settings import FitSettings

__all__ = [
    "FitResult",
    "FitSettings",
    "Image",
    "ImageError",
    "ImageFit",
    "build_inr",
    "fit",
    "load_image",
    "pixel_grid",
    "psnr",
    "square",
    "write_outputs",
]
