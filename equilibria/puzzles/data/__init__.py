"""Puzzle data: three families generated from a seed with a difficulty knob, checked against
their own rules, scored by exact match, and read from / written to plain-text files.

- `prefix_sums` (difficulty: bits L): the running parity of a bit string;
- `mazes` (difficulty: n, for n x n cells): the path from S to G in a perfect maze;
- `sudoku` (difficulty: givens): the unique solution of a Sudoku.

`FAMILIES[name]` offers `generate`, `check`, `exact_match`, `parse` / `read`, `format` / `write`
and `description`; `load_puzzles` caches generated sets; `pictures.draw_puzzles` draws answers.
"""

from __future__ import annotations

from .base import PuzzleFamily, PuzzleSet
from .cache import FORMAT_VERSION, load_puzzles
from .mazes import MAZES
from .prefix_sums import PREFIX_SUMS
from .registry import FAMILIES, get_family
from .sudoku import SUDOKU
from .sudoku_solver import count_solutions
from .text import PuzzleFileError

__all__ = [
    "FAMILIES",
    "FORMAT_VERSION",
    "MAZES",
    "PREFIX_SUMS",
    "SUDOKU",
    "PuzzleFamily",
    "PuzzleFileError",
    "PuzzleSet",
    "count_solutions",
    "get_family",
    "load_puzzles",
]
