"""The cells that solve puzzles: the puzzle is injected at every application, so iterating a cell
longer carries what it has worked out further (along a string, along a maze's corridors,
between the constraints of a Sudoku) with the same weights.

`ConvCell` works on sequences (1-d) and grids (2-d) with small kernels, so one application
moves information a step or two and a larger puzzle needs more applications, not more weights;
`AttentionCell` lets each of the 81 Sudoku cells look at all the others.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import check_choice, check_positive_int


def conv(dims: int, channels_in: int, channels_out: int, kernel: int = 3) -> nn.Module:
    """A 1-d or 2-d convolution that keeps the length or grid size."""
    layer = {1: nn.Conv1d, 2: nn.Conv2d}[dims]
    return layer(channels_in, channels_out, kernel, padding=kernel // 2)


class ConvCell(nn.Module):
    """f(z, u) = tanh(conv2(relu(conv1(z) + u))) on a (batch, width, length) sequence or a
    (batch, width, height, width) grid; `u` is the puzzle, already embedded to `width` channels.

    The tanh keeps every state bounded, so iterates cannot run away on a puzzle larger than
    any seen in training."""

    def __init__(self, width: int, dims: int) -> None:
        super().__init__()
        self.width = check_positive_int("width", width)
        self.dims = int(check_choice("dims", str(dims), ("1", "2")))
        self.first = conv(self.dims, width, width)
        self.second = conv(self.dims, width, width)

    def forward(self, z: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.second(F.relu(self.first(z) + u)))


class AttentionCell(nn.Module):
    """One pre-norm transformer block over the 81 cells of a Sudoku, the puzzle added to its
    input at every application: f(z, u) = LN(h + MLP(LN(h))), h = z + u + attention(LN(z + u)).
    The closing LayerNorm keeps the state bounded."""

    def __init__(self, width: int, heads: int = 4, expansion: int = 2) -> None:
        super().__init__()
        self.width = check_positive_int("width", width)
        if width % heads:
            raise ValueError(f"width={width} must be a multiple of heads={heads}")
        self.attention_norm = nn.LayerNorm(width)
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, expansion * width), nn.GELU(), nn.Linear(expansion * width, width)
        )
        self.out_norm = nn.LayerNorm(width)

    def forward(self, z: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        h = z + u
        normed = self.attention_norm(h)
        h = h + self.attention(normed, normed, normed, need_weights=False)[0]
        h = h + self.mlp(self.mlp_norm(h))
        return self.out_norm(h)
