"""Sudoku: fill a 9x9 grid so that every row, column and 3x3 box holds 1..9 once (difficulty:
the number of givens, 17..81).

inputs: int64 (N, 81) digits row-major, 0 for a blank; targets: int64 (N, 81), the unique
solution. A puzzle is made from a random full grid (randomized backtracking) by blanking its
cells in random order, each blank kept only while the solution stays unique, until `givens`
remain; an order stuck above that is retried with a new grid. One pass usually gets down to
23-26 givens, so the cost grows fast below 24: about 2 ms a puzzle at 36 givens, 9 ms at 26,
20 ms at 24, 60 ms at 23, 0.4 s at 22 and 3 s at 21 (one CPU core); below 21 it is rarely
reached, and a ValueError says so after `MAX_TRIES` tries. No Sudoku with fewer than 17 givens
has a unique solution.

Text format: one 81-character line per puzzle, digits 1-9 and `.` or `0` for a blank;
surrounding whitespace, blank lines and lines starting with `#` are ignored. The puzzles of a file
form one set, whose difficulty is the fewest givens among them.
"""

from __future__ import annotations

import random

import torch

from ...errors import check_positive_int
from .base import PuzzleFamily, PuzzleSet
from .sudoku_solver import random_full_grid, remove_clues, rule_violation, solve
from .text import bad_character, fault, no_puzzles, puzzle_lines, puzzle_name

MIN_GIVENS = 17
MAX_TRIES = 2000  # grids (and removal orders) tried per puzzle before giving up


def make_puzzle(givens: int, rng: random.Random) -> tuple[list[int], list[int]]:
    """(puzzle, solution): a puzzle with `givens` givens and a unique solution."""
    for _ in range(MAX_TRIES):
        solution = random_full_grid(rng)
        puzzle = remove_clues(solution, givens, rng)
        if puzzle is not None:
            return puzzle, solution
    raise ValueError(
        f"sudoku: no puzzle with {givens} givens and a unique solution found in {MAX_TRIES} "
        "tries; random clue removal rarely gets below 22 givens, ask for more givens"
    )


def _units(grid: torch.Tensor) -> torch.Tensor:
    """The 27 units (rows, columns, boxes) of a 9x9 grid, one per row."""
    boxes = grid.reshape(3, 3, 3, 3).permute(0, 2, 1, 3).reshape(9, 9)
    return torch.cat([grid, grid.T, boxes])


class Sudoku(PuzzleFamily):
    """Sudoku puzzles with a unique solution."""

    name = "sudoku"
    unit = "cell"

    def generate(self, count: int, difficulty: int, seed: int) -> PuzzleSet:
        """`count` puzzles with `difficulty` givens; puzzle i depends only on (seed, i), so a
        smaller count gives the first puzzles of a larger one."""
        self._check_request(count, seed)
        check_positive_int("sudoku difficulty (givens)", difficulty)
        if not MIN_GIVENS <= difficulty <= 81:
            raise ValueError(
                f"sudoku difficulty (givens) must lie in {MIN_GIVENS}..81 (no Sudoku with fewer "
                f"than {MIN_GIVENS} givens has a unique solution), got {difficulty}"
            )
        pairs = [
            make_puzzle(difficulty, random.Random(f"sudoku/{seed}/{index}"))
            for index in range(count)
        ]
        inputs = torch.tensor([p for p, _ in pairs], dtype=torch.int64).reshape(count, 81)
        targets = torch.tensor([s for _, s in pairs], dtype=torch.int64).reshape(count, 81)
        return PuzzleSet(self.name, inputs, targets, difficulty)

    def check(self, inputs: torch.Tensor, answer: torch.Tensor) -> bool:
        """Whether `answer` fills every row, column and box with 1..9 once, keeping every given."""
        if inputs.shape != (81,) or answer.shape != (81,):
            return False
        given = inputs != 0
        if not (answer[given] == inputs[given]).all():
            return False
        units = _units(answer.long().reshape(9, 9)).sort(dim=1).values
        return bool((units == torch.arange(1, 10)).all())

    def parse(self, text: str, source: str = "<text>") -> list[PuzzleSet]:
        """The puzzles of `text` as one set; each is solved, and must have one solution."""
        lines = puzzle_lines(text)
        if not lines:
            raise no_puzzles(source, text)
        puzzles, solutions, names = [], [], []
        for number, (line_number, line) in enumerate(lines, start=1):
            try:
                puzzle, solution = _read_sudoku(line)
            except ValueError as error:
                raise fault(source, number, line_number, str(error)) from None
            puzzles.append(puzzle)
            solutions.append(solution)
            names.append(puzzle_name(source, number, line_number))
        inputs = torch.tensor(puzzles, dtype=torch.int64)
        fewest = int((inputs != 0).sum(dim=1).min())
        targets = torch.tensor(solutions, dtype=torch.int64)
        return [PuzzleSet(self.name, inputs, targets, fewest, tuple(names))]

    def format(self, puzzles: PuzzleSet) -> str:
        """One 81-character line per puzzle, `.` for a blank."""
        self._check_family(puzzles)
        return "".join(
            "".join(str(d) if d else "." for d in row) + "\n" for row in puzzles.inputs.tolist()
        )

    def description(self, difficulty: int) -> str:
        return f"Sudoku with {difficulty} givens"


def _read_sudoku(line: str) -> tuple[list[int], list[int]]:
    """(puzzle, solution) of an 81-character line; a ValueError naming the fault."""
    if len(line) != 81:
        raise ValueError(f"the line has {len(line)} characters, a Sudoku line 81")
    bad = bad_character(line, "123456789.0")
    if bad is not None:
        raise ValueError(
            f"bad character {bad[1]!r} at column {bad[0]} (a Sudoku line holds only digits 1-9 "
            "and '.' or '0' for a blank)"
        )
    puzzle = [0 if char == "." else int(char) for char in line]
    broken = rule_violation(puzzle)
    if broken is not None:
        raise ValueError(f"the givens break a rule: {broken}")
    solution, count = solve(puzzle)
    if solution is None:
        raise ValueError("no solution")
    if count > 1:
        raise ValueError("ambiguous: more than one solution")
    return puzzle, solution


SUDOKU = Sudoku()
