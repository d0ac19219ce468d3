"""The random views of contrastive training: affine jitter, contrast, blanked squares, noise.

Every random number comes from a `torch.Generator` on the CPU, so a view is a function of the
images and the generator's seed alone (on any device), and a resumed run draws the same views.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..config.ssl import SSLConfig
from ..errors import check_fraction, check_nonnegative


@dataclass(frozen=True)
class ViewAugment:
    """Draws one random view of each image in a normalized batch (batch, channels, H, W).

    Args:
        translate: largest shift, as a fraction of the image size.
        rotate: largest rotation in degrees.
        zoom: the scale is drawn from [1 - zoom, 1 + zoom].
        contrast: each image's deviation from its mean is scaled by a factor in [1 - c, 1 + c].
        erase: probability of blanking a random square of a third of the image side.
        noise: standard deviation of added Gaussian noise.
    """

    translate: float = 0.15
    rotate: float = 15.0
    zoom: float = 0.2
    contrast: float = 0.4
    erase: float = 0.5
    noise: float = 0.1

    def __post_init__(self) -> None:
        for name in ("translate", "rotate", "noise"):
            check_nonnegative(name, getattr(self, name))
        check_fraction("zoom", self.zoom, allow_zero=True)
        if self.zoom >= 1:
            raise ValueError(f"zoom must be < 1 (the scale stays positive), got {self.zoom!r}")
        check_fraction("contrast", self.contrast, allow_zero=True)
        check_fraction("erase", self.erase, allow_zero=True)

    @classmethod
    def from_config(cls, config: SSLConfig) -> ViewAugment:
        return cls(
            translate=config.aug_translate,
            rotate=config.aug_rotate,
            zoom=config.aug_zoom,
            contrast=config.aug_contrast,
            erase=config.aug_erase,
            noise=config.aug_noise,
        )

    def __call__(
        self,
        x: torch.Tensor,
        generator: torch.Generator,
        fill: torch.Tensor | float = 0.0,
    ) -> torch.Tensor:
        """A random view of every image in `x`; pixels moved in from outside take `fill` (a
        scalar or one value per channel: the normalized black)."""
        if x.dim() != 4 or not x.is_floating_point():
            raise ValueError(
                "views are drawn from float images (batch, channels, height, width), got "
                f"{x.dtype} of shape {tuple(x.shape)}"
            )
        batch, channels, height, width = x.shape

        def uniform(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=generator).to(x.device, x.dtype)

        fill = torch.as_tensor(fill, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
        angle = (2 * uniform(batch) - 1) * math.radians(self.rotate)
        scale = 1 + (2 * uniform(batch) - 1) * self.zoom
        shift = (2 * uniform(batch, 2) - 1) * 2 * self.translate  # grid units span 2
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack(
            [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
        )
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        view = F.grid_sample(x - fill, grid, align_corners=False) + fill
        mean = view.mean(dim=(1, 2, 3), keepdim=True)
        factor = 1 + (2 * uniform(batch, 1, 1, 1) - 1) * self.contrast
        view = mean + (view - mean) * factor
        view = self._erase(view, fill, uniform)
        if self.noise > 0:
            noise = torch.randn(view.shape, generator=generator).to(x.device, x.dtype)
            view = view + self.noise * noise
        return view

    def _erase(self, view: torch.Tensor, fill: torch.Tensor, uniform) -> torch.Tensor:
        """Blank a square of side ~H/3 at a random place, in each image with probability erase."""
        batch, _, height, width = view.shape
        side_h, side_w = max(1, height // 3), max(1, width // 3)
        chosen = uniform(batch) < self.erase
        top = (uniform(batch) * (height - side_h + 1)).long().clamp_max(height - side_h)
        left = (uniform(batch) * (width - side_w + 1)).long().clamp_max(width - side_w)
        rows = torch.arange(height, device=view.device).view(1, height, 1)
        cols = torch.arange(width, device=view.device).view(1, 1, width)
        inside = (
            (rows >= top.view(-1, 1, 1))
            & (rows < (top + side_h).view(-1, 1, 1))
            & (cols >= left.view(-1, 1, 1))
            & (cols < (left + side_w).view(-1, 1, 1))
        )
        blank = (inside & chosen.view(-1, 1, 1)).unsqueeze(1)
        return torch.where(blank, fill.expand_as(view), view)
