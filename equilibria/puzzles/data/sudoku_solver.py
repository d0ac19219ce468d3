"""A bitmask Sudoku solver: counting solutions (up to a limit), random full grids, and puzzles
with a unique solution made by removing clues.

A grid is a list of 81 ints, row-major, 0 for a blank. The search fills the blank with the
fewest candidates first (a cell with one candidate is a naked single, placed without branching).
"""

from __future__ import annotations

import random

FULL = 0x1FF  # the nine digits as bits 0..8
ROW = [cell // 9 for cell in range(81)]
COL = [cell % 9 for cell in range(81)]
BOX = [(cell // 27) * 3 + (cell % 9) // 3 for cell in range(81)]
POPCOUNT = [bin(mask).count("1") for mask in range(512)]
CHOICES = [[(1 << d, d + 1) for d in range(9) if mask >> d & 1] for mask in range(512)]
UNITS = (
    [("row", i, [i * 9 + j for j in range(9)]) for i in range(9)]
    + [("column", j, [i * 9 + j for i in range(9)]) for j in range(9)]
    + [
        ("box", b, [(b // 3 * 3 + i) * 9 + b % 3 * 3 + j for i in range(3) for j in range(3)])
        for b in range(9)
    ]
)


class _Board:
    """A partly filled grid with the digits used by each row, column and box as bitmasks."""

    def __init__(self, grid: list[int]) -> None:
        self.grid = list(grid)
        self.rows = [0] * 9
        self.cols = [0] * 9
        self.boxes = [0] * 9
        self.empties = []
        for cell, digit in enumerate(self.grid):
            if digit:
                self.place(cell, 1 << (digit - 1), digit)
            else:
                self.empties.append(cell)

    def place(self, cell: int, bit: int, digit: int) -> None:
        self.rows[ROW[cell]] |= bit
        self.cols[COL[cell]] |= bit
        self.boxes[BOX[cell]] |= bit
        self.grid[cell] = digit

    def lift(self, cell: int, bit: int) -> None:
        self.rows[ROW[cell]] ^= bit
        self.cols[COL[cell]] ^= bit
        self.boxes[BOX[cell]] ^= bit
        self.grid[cell] = 0

    def free(self, cell: int) -> int:
        """The digits (as bits) that `cell` may take without breaking a rule."""
        return FULL & ~(self.rows[ROW[cell]] | self.cols[COL[cell]] | self.boxes[BOX[cell]])

    def search(self, limit: int, found: list[list[int]], rng: random.Random | None = None) -> int:
        """Count completions up to `limit`, appending the first one found to `found`."""
        empties = self.empties
        if not empties:
            if not found:
                found.append(list(self.grid))
            return 1
        rows, cols, boxes = self.rows, self.cols, self.boxes
        best_index, best_free, best_count = 0, 0, 10
        for index, cell in enumerate(empties):
            free = FULL & ~(rows[ROW[cell]] | cols[COL[cell]] | boxes[BOX[cell]])
            count = POPCOUNT[free]
            if count < best_count:
                best_index, best_free, best_count = index, free, count
                if count <= 1:
                    break
        if best_count == 0:
            return 0
        cell = empties[best_index]
        empties[best_index] = empties[-1]
        empties.pop()
        choices = CHOICES[best_free]
        if rng is not None and len(choices) > 1:
            choices = rng.sample(choices, len(choices))
        total = 0
        for bit, digit in choices:
            self.place(cell, bit, digit)
            total += self.search(limit - total, found, rng)
            self.lift(cell, bit)
            if total >= limit:
                break
        empties.append(cell)
        return total


def rule_violation(grid: list[int]) -> str | None:
    """The first rule the givens of `grid` break, in words (None when they break none)."""
    for kind, number, cells in UNITS:
        seen: dict[int, int] = {}
        for position, cell in enumerate(cells):
            digit = grid[cell]
            if not digit:
                continue
            if digit in seen:
                if kind == "box":
                    where = f"box {number + 1} (cells {seen[digit] + 1} and {position + 1})"
                else:
                    across = "columns" if kind == "row" else "rows"
                    where = f"{kind} {number + 1} ({across} {seen[digit] + 1} and {position + 1})"
                return f"digit {digit} twice in {where}"
            seen[digit] = position
    return None


def count_solutions(grid: list[int], limit: int = 2) -> int:
    """The number of solutions of `grid`, counted up to `limit` (givens must break no rule)."""
    return _Board(grid).search(limit, [])


def solve(grid: list[int]) -> tuple[list[int] | None, int]:
    """(the first solution found or None, the number of solutions counted up to 2)."""
    found: list[list[int]] = []
    count = _Board(grid).search(2, found)
    return (found[0] if found else None), count


def random_full_grid(rng: random.Random) -> list[int]:
    """A random complete grid: the search on an empty grid, trying digits in random order."""
    found: list[list[int]] = []
    _Board([0] * 81).search(1, found, rng)
    return found[0]


def remove_clues(solution: list[int], givens: int, rng: random.Random) -> list[int] | None:
    """Blank the cells of `solution` in a random order, keeping each blank only while the
    solution stays unique, until `givens` remain; None when the order gets stuck above it.

    A blank that breaks uniqueness now breaks it for good (blanking more only adds solutions),
    so one pass over the cells finds every blank this order allows."""
    board = _Board(solution)
    remaining = 81
    order = rng.sample(range(81), 81)
    for position, cell in enumerate(order):
        if remaining == givens:
            break
        if remaining - givens > 81 - position:
            return None  # too few cells left to try
        digit = board.grid[cell]
        bit = 1 << (digit - 1)
        board.lift(cell, bit)
        board.empties.append(cell)
        if _other_solution(board, cell, bit):
            board.empties.pop()
            board.place(cell, bit, digit)
        else:
            remaining -= 1
    return board.grid if remaining == givens else None


def _other_solution(board: _Board, cell: int, bit: int) -> bool:
    """Whether the blanked `cell` can take a digit other than `bit` in some solution."""
    alternatives = board.free(cell) & ~bit
    if not alternatives:
        return False
    board.empties.remove(cell)
    try:
        for other_bit, other_digit in CHOICES[alternatives]:
            board.place(cell, other_bit, other_digit)
            solutions = board.search(1, [])
            board.lift(cell, other_bit)
            if solutions:
                return True
        return False
    finally:
        board.empties.append(cell)
