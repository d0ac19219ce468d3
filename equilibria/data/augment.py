"""Training-time augmentation on batches of images: random translations and horizontal flips."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_shift(x: torch.Tensor, pixels: int, fill: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Translate each image by its own random offset in [-pixels, pixels]^2 (torch's RNG).

    Uncovered pixels take `fill` (a scalar or one value per channel: the normalized black).
    """
    if pixels <= 0:
        return x
    batch, channels, height, width = x.shape
    fill = torch.as_tensor(fill, dtype=x.dtype, device=x.device).reshape(-1)
    padded = F.pad(x - fill.view(1, -1, 1, 1), (pixels,) * 4) + fill.view(1, -1, 1, 1)
    offsets = torch.randint(0, 2 * pixels + 1, (2, batch, 1), device=x.device)
    rows = (torch.arange(height, device=x.device) + offsets[0]).view(batch, 1, height, 1)
    cols = (torch.arange(width, device=x.device) + offsets[1]).view(batch, 1, 1, width)
    rows = rows.expand(batch, channels, height, width + 2 * pixels)
    picked = padded.gather(2, rows)
    return picked.gather(3, cols.expand(batch, channels, height, width))


def random_flip(x: torch.Tensor) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2 (torch's RNG)."""
    flip = torch.rand(x.shape[0], device=x.device) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
