"""What every puzzle family shares: a set of puzzles, the family's interface, the file error."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ...errors import check_positive_int
from ...files import atomic_write_bytes
from .text import read_text


@dataclass(frozen=True, eq=False)
class PuzzleSet:
    """Puzzles of one family and one size, in the family's tensor encoding.

    Attributes:
        family: the family's name (a key of `FAMILIES`).
        inputs, targets: one puzzle per row (the encodings are described by each family).
        difficulty: the family's knob (bits, maze cells per side, Sudoku givens).
        names: where each puzzle came from, for puzzles read from a file (None when generated).

    Two sets are equal only when they are the same object (compare their tensors instead).
    """

    family: str
    inputs: torch.Tensor
    targets: torch.Tensor
    difficulty: int
    names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.inputs.shape[0] != self.targets.shape[0]:
            raise ValueError(
                f"{self.family}: {self.inputs.shape[0]} inputs but {self.targets.shape[0]} targets"
            )
        if self.names is not None and len(self.names) != self.inputs.shape[0]:
            raise ValueError(
                f"{self.family}: {len(self.names)} names for {self.inputs.shape[0]} puzzles"
            )

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def subset(self, indices: Sequence[int] | torch.Tensor) -> PuzzleSet:
        """The puzzles at `indices` (positions, or a boolean mask over the puzzles)."""
        index = torch.as_tensor(indices)
        if index.dtype == torch.bool:
            index = index.nonzero().flatten()
        index = index.long().flatten()
        names = None if self.names is None else tuple(self.names[i] for i in index.tolist())
        return PuzzleSet(
            self.family,
            self.inputs[index].contiguous(),
            self.targets[index].contiguous(),
            self.difficulty,
            names,
        )


class PuzzleFamily(ABC):
    """One family of puzzles: generating, checking, scoring, reading and writing them."""

    name: str
    unit: str  # what a wrong answer counts: "bit", "square", "cell"

    @abstractmethod
    def generate(self, count: int, difficulty: int, seed: int) -> PuzzleSet:
        """`count` puzzles at `difficulty`, the same for the same `seed`."""

    @abstractmethod
    def check(self, inputs: torch.Tensor, answer: torch.Tensor) -> bool:
        """Whether `answer` (target encoding) solves the one puzzle `inputs` by its rules."""

    @abstractmethod
    def parse(self, text: str, source: str = "<text>") -> list[PuzzleSet]:
        """The puzzles of a file's `text`, one set per size (`source` names it in errors)."""

    @abstractmethod
    def format(self, puzzles: PuzzleSet) -> str:
        """The text format of `puzzles` (what `parse` reads back)."""

    @abstractmethod
    def description(self, difficulty: int) -> str:
        """The puzzles of `difficulty` in a few words."""

    def exact_match(self, predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Bool (N,): whether each whole prediction equals its target."""
        if predictions.shape != targets.shape:
            raise ValueError(
                f"{self.name}: predictions of shape {tuple(predictions.shape)} do not match "
                f"targets of shape {tuple(targets.shape)}"
            )
        return (predictions == targets).reshape(len(targets), -1).all(dim=1)

    def read(self, path: str | Path) -> list[PuzzleSet]:
        """The puzzles of the file at `path` (see `parse`)."""
        return self.parse(read_text(path), str(path))

    def write(self, puzzles: PuzzleSet, path: str | Path) -> None:
        """Write `puzzles` to `path` in the text format, atomically."""
        atomic_write_bytes(Path(path), self.format(puzzles).encode())

    def _check_request(self, count: int, seed: int) -> None:
        check_positive_int("count", count, minimum=0)
        check_positive_int("seed", seed, minimum=0)

    def _check_family(self, puzzles: PuzzleSet) -> None:
        if puzzles.family != self.name:
            raise ValueError(f"{self.name}: cannot format puzzles of family {puzzles.family!r}")
