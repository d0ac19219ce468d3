"""Prefix sums: the running parity of a bit string (difficulty: the string's length L).

inputs: int64 (N, L) bits; targets: int64 (N, L), targets[:, i] = inputs[:, : i + 1].sum() % 2.
Text format: one string of `0` and `1` per line; surrounding whitespace, blank lines and lines
starting with `#` are ignored. Strings of different lengths are read into one set per length.
"""

from __future__ import annotations

import numpy as np
import torch

from ...errors import check_positive_int
from .base import PuzzleFamily, PuzzleSet
from .text import bad_character, fault, group, no_puzzles, puzzle_lines, puzzle_name


def parity(bits: torch.Tensor) -> torch.Tensor:
    """The cumulative parity along the last dimension."""
    return bits.cumsum(dim=-1) % 2


class PrefixSums(PuzzleFamily):
    """Bit strings and their running parity."""

    name = "prefix_sums"
    unit = "bit"

    def generate(self, count: int, difficulty: int, seed: int) -> PuzzleSet:
        """`count` uniform random strings of `difficulty` bits."""
        self._check_request(count, seed)
        check_positive_int("prefix_sums difficulty (bits)", difficulty)
        rng = np.random.default_rng(seed)
        inputs = torch.from_numpy(rng.integers(0, 2, size=(count, difficulty), dtype=np.int64))
        return PuzzleSet(self.name, inputs, parity(inputs), difficulty)

    def check(self, inputs: torch.Tensor, answer: torch.Tensor) -> bool:
        """Whether `answer` is the running parity of the bits `inputs`."""
        return answer.shape == inputs.shape and bool((answer == parity(inputs.long())).all())

    def parse(self, text: str, source: str = "<text>") -> list[PuzzleSet]:
        """One set per string length, in increasing length."""
        lines = puzzle_lines(text)
        if not lines:
            raise no_puzzles(source, text)
        read = []
        for number, (line_number, line) in enumerate(lines, start=1):
            bad = bad_character(line, "01")
            if bad is not None:
                column, char = bad
                raise fault(
                    source,
                    number,
                    line_number,
                    f"bad character {char!r} at column {column} (a bit string holds only 0 and 1)",
                )
            read.append((puzzle_name(source, number, line_number), [int(c) for c in line]))
        sets = []
        for same_length in group(read, key=lambda item: len(item[1])):
            inputs = torch.tensor([bits for _, bits in same_length], dtype=torch.int64)
            names = tuple(name for name, _ in same_length)
            sets.append(PuzzleSet(self.name, inputs, parity(inputs), inputs.shape[1], names))
        return sets

    def format(self, puzzles: PuzzleSet) -> str:
        """One bit string per line."""
        self._check_family(puzzles)
        return "".join("".join(map(str, row)) + "\n" for row in puzzles.inputs.tolist())

    def description(self, difficulty: int) -> str:
        return f"{difficulty}-bit strings"


PREFIX_SUMS = PrefixSums()
