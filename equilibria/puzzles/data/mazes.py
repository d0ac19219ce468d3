"""Mazes: the path from a start to a goal (difficulty: n, the maze has n x n cells).

A generated maze is perfect (a randomized depth-first search carves a spanning tree of the cells,
so exactly one path joins any two) and drawn on a (2n+1) x (2n+1) grid of squares: cells at odd
coordinates, the passages between them, walls around. Start S and goal G are two distinct
random cells.

inputs: float32 (N, 3, H, W): channel 0 open squares (S and G included), 1 the start, 2 the goal
(one-hot); targets: int64 (N, H, W), 1 on every square of the S-to-G path (S and G included).

Text format: one ASCII grid per maze, `#` wall, `.` open, `S` start, `G` goal, mazes separated by
blank lines (trailing whitespace of a row is ignored). A maze read from a file may be any
rectangular grid; its target is the shortest S-to-G path, which must be unique. Mazes of
different shapes are read into one set per shape; a set's difficulty is max(H, W) // 2 (n for
the (2n+1)-square grids generated here).
"""

from __future__ import annotations

import random
from collections import deque

import numpy as np
import torch

from ...errors import check_positive_int
from .base import PuzzleFamily, PuzzleSet
from .text import bad_character, blocks, fault, group, no_puzzles, puzzle_name

CHARACTERS = "#.SG"
CHAR_ARRAY = np.array(list(CHARACTERS))


def carve(n: int, rng: random.Random) -> tuple[bytearray, int, int, list[int]]:
    """A perfect maze of n x n cells: (open squares of the (2n+1)^2 grid, flat and row-major;
    the start square; the goal square; the squares of the path between them).

    The depth-first search starts at S, so each cell's parent in its tree leads back to S."""
    size = 2 * n + 1
    grid = bytearray(size * size)
    start, goal = rng.sample(range(n * n), 2)

    def square(cell: int) -> int:
        return (2 * (cell // n) + 1) * size + 2 * (cell % n) + 1

    visited = bytearray(n * n)
    parent = [-1] * (n * n)
    visited[start] = 1
    grid[square(start)] = 1
    stack = [start]
    while stack:
        cell = stack[-1]
        row, column = divmod(cell, n)
        options = []
        if row > 0 and not visited[cell - n]:
            options.append(cell - n)
        if row < n - 1 and not visited[cell + n]:
            options.append(cell + n)
        if column > 0 and not visited[cell - 1]:
            options.append(cell - 1)
        if column < n - 1 and not visited[cell + 1]:
            options.append(cell + 1)
        if not options:
            stack.pop()
            continue
        step = options[rng.randrange(len(options))] if len(options) > 1 else options[0]
        visited[step] = 1
        parent[step] = cell
        here, there = square(cell), square(step)
        grid[there] = 1
        grid[(here + there) // 2] = 1
        stack.append(step)
    path = [square(goal)]
    cell = goal
    while cell != start:
        here, there = square(cell), square(parent[cell])
        path += [(here + there) // 2, there]
        cell = parent[cell]
    return grid, square(start), square(goal), path


def shortest_path(is_open: list[bool], width: int, start: int, goal: int) -> list[int]:
    """The squares (flat indices) of the unique shortest path from `start` to `goal` over open
    squares of a row-major grid `width` wide; a ValueError when there is none or several."""
    size = len(is_open)
    distance = [-1] * size
    paths = [0] * size  # shortest paths reaching each square, counted up to 2
    distance[start], paths[start] = 0, 1
    queue = deque([start])
    while queue:
        here = queue.popleft()
        for there in _neighbours(here, width, size):
            if not is_open[there]:
                continue
            if distance[there] < 0:
                distance[there] = distance[here] + 1
                queue.append(there)
            if distance[there] == distance[here] + 1:
                paths[there] = min(2, paths[there] + paths[here])
    if distance[goal] < 0:
        raise ValueError("no path from S to G")
    if paths[goal] > 1:
        raise ValueError("ambiguous: more than one shortest path from S to G")
    path = [goal]
    here = goal
    while here != start:
        here = next(t for t in _neighbours(here, width, size) if distance[t] == distance[here] - 1)
        path.append(here)
    return path


def _neighbours(square: int, width: int, size: int) -> list[int]:
    """The 4-neighbours of `square` inside a row-major grid of `size` squares, `width` wide."""
    column = square % width
    found = []
    if square >= width:
        found.append(square - width)
    if square + width < size:
        found.append(square + width)
    if column > 0:
        found.append(square - 1)
    if column < width - 1:
        found.append(square + 1)
    return found


def _encode(
    grids: list[tuple[list[bool] | bytearray, int, int, list[int]]], height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The input and target tensors of mazes given as (open, start, goal, path), flat."""
    inputs = np.zeros((len(grids), 3, height * width), dtype=np.float32)
    targets = np.zeros((len(grids), height * width), dtype=np.int64)
    for index, (is_open, start, goal, path) in enumerate(grids):
        inputs[index, 0] = np.frombuffer(bytes(is_open), dtype=np.uint8)
        inputs[index, 1, start] = 1
        inputs[index, 2, goal] = 1
        targets[index, path] = 1
    return (
        torch.from_numpy(inputs.reshape(len(grids), 3, height, width)),
        torch.from_numpy(targets.reshape(len(grids), height, width)),
    )


def _walk_length(marked: list[list[int]], start: tuple[int, int], goal: tuple[int, int]) -> int:
    """The number of squares on the walk along marked squares from `start`; 0 when it does not
    end at `goal` (every square is known to have one or two marked neighbours)."""
    height, width = len(marked), len(marked[0])
    previous, here, length = None, start, 1
    while here != goal:
        row, column = here
        step = None
        for there in ((row - 1, column), (row + 1, column), (row, column - 1), (row, column + 1)):
            inside = 0 <= there[0] < height and 0 <= there[1] < width
            if there != previous and inside and marked[there[0]][there[1]]:
                step = there
                break
        if step is None:
            return 0
        previous, here, length = here, step, length + 1
    return length


class Mazes(PuzzleFamily):
    """Perfect mazes and the path from S to G."""

    name = "mazes"
    unit = "square"

    def generate(self, count: int, difficulty: int, seed: int) -> PuzzleSet:
        """`count` perfect mazes of `difficulty` x `difficulty` cells; puzzle i depends only on
        (seed, i), so a smaller count gives the first puzzles of a larger one."""
        self._check_request(count, seed)
        check_positive_int("mazes difficulty (cells per side)", difficulty, minimum=2)
        grids = [
            carve(difficulty, random.Random(f"mazes/{seed}/{index}")) for index in range(count)
        ]
        size = 2 * difficulty + 1
        inputs, targets = _encode(grids, size, size)
        return PuzzleSet(self.name, inputs, targets, difficulty)

    def check(self, inputs: torch.Tensor, answer: torch.Tensor) -> bool:
        """Whether the squares marked 1 in `answer` form a simple path of open squares from S
        to G: S and G marked with one marked neighbour each, every other marked square open with
        two, all of them joined."""
        if inputs.dim() != 3 or inputs.shape[0] != 3 or answer.shape != inputs.shape[1:]:
            return False
        is_open, starts, goals = (inputs > 0.5).unbind(0)
        marked = answer == 1
        if not (marked | (answer == 0)).all() or (marked & ~is_open).any():
            return False
        if starts.sum() != 1 or goals.sum() != 1 or not marked[starts | goals].all():
            return False
        padded = torch.nn.functional.pad(marked.long(), (1, 1, 1, 1))
        neighbours = padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:]
        ends = starts | goals
        if (neighbours[ends] != 1).any() or (neighbours[marked & ~ends] != 2).any():
            return False
        start = tuple(starts.nonzero()[0].tolist())
        goal = tuple(goals.nonzero()[0].tolist())
        return _walk_length(marked.tolist(), start, goal) == int(marked.sum())

    def parse(self, text: str, source: str = "<text>") -> list[PuzzleSet]:
        """One set per grid shape, in increasing shape."""
        found = blocks(text)
        if not found:
            raise no_puzzles(source, text)
        read = []
        for number, (line, rows) in enumerate(found, start=1):
            try:
                maze = _read_maze(rows)
            except ValueError as error:
                raise fault(source, number, line, str(error)) from None
            read.append((puzzle_name(source, number, line), len(rows), len(rows[0]), maze))
        sets = []
        for same_shape in group(read, key=lambda item: item[1:3]):
            height, width = same_shape[0][1:3]
            inputs, targets = _encode([item[3] for item in same_shape], height, width)
            names = tuple(item[0] for item in same_shape)
            difficulty = max(height, width) // 2
            sets.append(PuzzleSet(self.name, inputs, targets, difficulty, names))
        return sets

    def format(self, puzzles: PuzzleSet) -> str:
        """One ASCII grid per maze, a blank line between mazes."""
        self._check_family(puzzles)
        is_open, starts, goals = (puzzles.inputs > 0.5).numpy().transpose(1, 0, 2, 3)
        codes = np.where(starts, 2, np.where(goals, 3, is_open.astype(np.int64)))
        mazes = ["\n".join(map("".join, CHAR_ARRAY[maze].tolist())) + "\n" for maze in codes]
        return "\n".join(mazes)

    def description(self, difficulty: int) -> str:
        return f"{difficulty}x{difficulty}-cell mazes"


def _read_maze(rows: list[str]) -> tuple[list[bool], int, int, list[int]]:
    """(open squares, start, goal, shortest path) of a maze's rows, flat; a ValueError naming
    the fault."""
    width = len(rows[0])
    starts, goals = [], []
    for number, row in enumerate(rows, start=1):
        if len(row) != width:
            raise ValueError(f"row {number} has width {len(row)}, the maze's first row {width}")
        bad = bad_character(row, CHARACTERS)
        if bad is not None:
            raise ValueError(
                f"row {number}: bad character {bad[1]!r} at column {bad[0]} "
                "(a maze holds only '#', '.', 'S' and 'G')"
            )
        starts += [(number, column) for column, char in enumerate(row, start=1) if char == "S"]
        goals += [(number, column) for column, char in enumerate(row, start=1) if char == "G"]
    for what, char, places in (("start", "S", starts), ("goal", "G", goals)):
        if not places:
            raise ValueError(f"no {what} {char!r}")
        if len(places) > 1:
            (r1, c1), (r2, c2) = places[:2]
            raise ValueError(
                f"more than one {what} {char!r} (row {r1}, column {c1} and row {r2}, column {c2})"
            )
    flat = "".join(rows)
    is_open = [char != "#" for char in flat]
    start = (starts[0][0] - 1) * width + starts[0][1] - 1
    goal = (goals[0][0] - 1) * width + goals[0][1] - 1
    return is_open, start, goal, shortest_path(is_open, width, start, goal)


MAZES = Mazes()
