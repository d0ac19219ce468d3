"""Causal multi-head self-attention with rotary positions, optionally over a memory of the past.

Rotary embeddings (Su et al., 2021) rotate each pair of query and key features by an angle
proportional to the position, so the score between positions i and j depends on i - j only:
positions are relative, and a segment attends to a memory of earlier positions the same way
wherever the segment starts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import check_positive_int


def rotary_angles(
    positions: torch.Tensor, head_width: int, base: float = 10000.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosines and sines (positions, head_width / 2) of the rotary angles at `positions`."""
    frequencies = base ** (
        -torch.arange(0, head_width, 2, dtype=torch.float64, device=positions.device) / head_width
    )
    angles = positions.to(torch.float64)[:, None] * frequencies[None, :]
    return angles.cos(), angles.sin()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """`x` (..., positions, head_width) with each feature pair (2k, 2k + 1) rotated."""
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)


def causal_mask(length: int, memory: int, device: torch.device) -> torch.Tensor:
    """(length, memory + length) booleans: query i may see every memory slot and keys <= i."""
    keys = torch.arange(memory + length, device=device)
    queries = torch.arange(length, device=device) + memory
    return keys[None, :] <= queries[:, None]


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which position t sees positions <= t (and any memory).

    Args:
        width: features per position.
        heads: attention heads (must divide `width`; each head's width must be even).
    """

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        check_positive_int("width", width)
        check_positive_int("heads", heads)
        if width % heads or (width // heads) % 2:
            raise ValueError(
                f"heads={heads} must divide width={width} into heads of even width (rotary "
                "positions rotate feature pairs)"
            )
        self.width, self.heads = width, heads
        self.query = nn.Linear(width, width)
        self.key_value = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.heads, -1).transpose(1, 2)

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        """Attend from `x` (batch, length, width) to `memory` (batch, m, width) and to `x`."""
        if x.dim() != 3 or x.shape[-1] != self.width:
            raise ValueError(
                f"attention expects (batch, length, {self.width}), got {tuple(x.shape)}"
            )
        context = x if memory is None else torch.cat((memory, x), dim=1)
        past = context.shape[1] - x.shape[1]
        query = self._split(self.query(x))
        key, value = (self._split(part) for part in self.key_value(context).chunk(2, dim=-1))
        cos, sin = rotary_angles(torch.arange(context.shape[1], device=x.device), query.shape[-1])
        query = rotate(query, cos[past:], sin[past:])
        key = rotate(key, cos, sin)
        scores = query @ key.transpose(-2, -1) * query.shape[-1] ** -0.5
        hidden = ~causal_mask(x.shape[1], past, x.device)
        weights = F.softmax(scores.masked_fill(hidden, float("-inf")), dim=-1)
        mixed = weights @ value  # written out (not fused) so that double backward works
        return self.out(mixed.transpose(1, 2).reshape(x.shape))
