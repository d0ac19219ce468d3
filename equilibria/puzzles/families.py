"""How each puzzle family meets a network: its embedding, cell and head, the answers its rules
rule out, its sizes and its test-time budget.

`FAMILY_SPECS[name]` is the one place a family's modelling choices live; the data itself
(generation, checking, files) is `equilibria.puzzles.data`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import check_choice
from .cells import AttentionCell, ConvCell, conv

# the logit given to answers a puzzle's own rules exclude (a wall on the path, another digit
# in a given Sudoku cell): low enough that the softmax gives them no weight
EXCLUDED = -30.0


class BitEmbedding(nn.Module):
    """(batch, L) bits -> (batch, width, L): the bits as -1/+1, through one convolution."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = conv(1, 1, width)

    def forward(self, bits: torch.Tensor) -> torch.Tensor:
        return self.conv(bits.unsqueeze(1).float() * 2 - 1)


class GridEmbedding(nn.Module):
    """(batch, 3, H, W) maze planes (open, start, goal) -> (batch, width, H, W)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = conv(2, 3, width)

    def forward(self, planes: torch.Tensor) -> torch.Tensor:
        return self.conv(planes.float())


class SudokuEmbedding(nn.Module):
    """(batch, 81) digits (0 blank) -> (batch, 81, width): the digit plus learned row, column
    and box embeddings, so attention knows which cells constrain each other."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.digit = nn.Embedding(10, width)
        self.row = nn.Embedding(9, width)
        self.column = nn.Embedding(9, width)
        self.box = nn.Embedding(9, width)
        cells = torch.arange(81)
        rows, columns = cells // 9, cells % 9
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("columns", columns, persistent=False)
        self.register_buffer("boxes", (rows // 3) * 3 + columns // 3, persistent=False)

    def forward(self, digits: torch.Tensor) -> torch.Tensor:
        places = self.row(self.rows) + self.column(self.columns) + self.box(self.boxes)
        return self.digit(digits.long()) + places


class ConvHead(nn.Module):
    """State -> per-position logits: a convolution, ReLU, and a 1x1 convolution to `classes`."""

    def __init__(self, dims: int, width: int, classes: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            conv(dims, width, width), nn.ReLU(), conv(dims, width, classes, 1)
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z)


class TokenHead(nn.Module):
    """(batch, 81, width) -> (batch, 9, 81) logits of the digits 1..9."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.linear = nn.Linear(width, 9)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(z)).transpose(1, 2)


@dataclass(frozen=True)
class FamilySpec:
    """One family's modelling choices.

    Attributes:
        name: the family (a key of `equilibria.puzzles.data.FAMILIES`).
        train_size, test_sizes: the default difficulties to train and test on.
        width: the default state width.
        train_cap: the default training iteration cap (deq.max_iter left at none).
        steps_per_epoch: the default training steps per epoch.
        batch_size: the default training batch (data.batch_size left at none).
        unit: what one unit of test-time budget is, in iterations, at a difficulty (see `cap`).
    """

    name: str
    train_size: int
    test_sizes: tuple[int, ...]
    width: int
    train_cap: int
    steps_per_epoch: int
    batch_size: int

    def embedding(self, width: int) -> nn.Module:
        if self.name == "prefix_sums":
            return BitEmbedding(width)
        if self.name == "mazes":
            return GridEmbedding(width)
        return SudokuEmbedding(width)

    def cell(self, width: int) -> nn.Module:
        if self.name == "sudoku":
            return AttentionCell(width, heads=4 if width % 4 == 0 else 1)
        return ConvCell(width, dims=1 if self.name == "prefix_sums" else 2)

    def head(self, width: int) -> nn.Module:
        if self.name == "sudoku":
            return TokenHead(width)
        return ConvHead(1 if self.name == "prefix_sums" else 2, width, 2)

    def mask(self, logits: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """`logits` with the answers the puzzle itself rules out set to `EXCLUDED`: a wall is
        never on a maze's path; a given Sudoku cell holds its given digit."""
        if self.name == "mazes":
            wall = inputs[:, 0] < 0.5
            path = logits[:, 1].masked_fill(wall, EXCLUDED)
            return torch.stack((logits[:, 0], path), dim=1)
        if self.name == "sudoku":
            given = inputs > 0
            digit = torch.nn.functional.one_hot((inputs - 1).clamp(min=0), 9).transpose(1, 2)
            other = given.unsqueeze(1) & (digit == 0)
            return logits.masked_fill(other, EXCLUDED)
        return logits

    def decode(self, logits: torch.Tensor) -> torch.Tensor:
        """The answer in the target encoding: the most likely class (digit) per position."""
        answer = logits.argmax(dim=1)
        return answer + 1 if self.name == "sudoku" else answer

    def loss_targets(self, targets: torch.Tensor) -> torch.Tensor:
        """Targets as class indices of the head (Sudoku digits 1..9 -> 0..8)."""
        return targets - 1 if self.name == "sudoku" else targets

    @property
    def fewer_is_harder(self) -> bool:
        """Whether a smaller difficulty value is the harder puzzle (Sudoku: fewer givens)."""
        return self.name == "sudoku"

    def hardest(self, sizes: Iterable[int]) -> int:
        """The hardest of the difficulties `sizes`."""
        return min(sizes) if self.fewer_is_harder else max(sizes)

    def cap(self, difficulty: int, factor: float) -> int:
        """The test-time iteration cap at `difficulty`: `factor` x the bits of a string, x half
        the squares of an n x n-cell maze (n^2 / 2, about the longest corridor a dead end fills),
        x 6 for any Sudoku (its difficulty is not a distance)."""
        if self.name == "prefix_sums":
            units = difficulty
        elif self.name == "mazes":
            units = max(1, difficulty * difficulty // 2)
        else:
            units = 6
        return max(1, round(factor * units))


FAMILY_SPECS: dict[str, FamilySpec] = {
    "prefix_sums": FamilySpec("prefix_sums", 32, (32, 128, 512), 32, 64, 50, batch_size=64),
    "mazes": FamilySpec("mazes", 5, (5, 10, 15), 48, 40, 120, batch_size=32),
    "sudoku": FamilySpec("sudoku", 36, (36, 31, 26), 64, 16, 50, batch_size=64),
}


def family_spec(name: str) -> FamilySpec:
    """The spec of family `name` (a ValueError naming the valid ones otherwise)."""
    return FAMILY_SPECS[check_choice("puzzles.family", name, FAMILY_SPECS)]
