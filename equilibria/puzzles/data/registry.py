"""The puzzle families by name."""

from __future__ import annotations

from ...errors import check_choice
from .base import PuzzleFamily
from .mazes import MAZES
from .prefix_sums import PREFIX_SUMS
from .sudoku import SUDOKU

FAMILIES: dict[str, PuzzleFamily] = {family.name: family for family in (PREFIX_SUMS, MAZES, SUDOKU)}


def get_family(name: str) -> PuzzleFamily:
    """The family called `name` (a ValueError naming the valid ones otherwise)."""
    return FAMILIES[check_choice("puzzle family", name, FAMILIES)]
