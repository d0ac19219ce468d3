"""Puzzle data: seeded generators, the checkers, exact match, the text formats and their errors,
the cache and the pictures."""

from collections import deque

import pytest
import torch

from equilibria.errors import EquilibriaError
from equilibria.puzzles.data import (
    FAMILIES,
    MAZES,
    PREFIX_SUMS,
    SUDOKU,
    PuzzleFileError,
    PuzzleSet,
    count_solutions,
    get_family,
    load_puzzles,
)
from equilibria.puzzles.data.cache import cache_path

SMALL = {"prefix_sums": 12, "mazes": 4, "sudoku": 34}


def generate(family, count=4, seed=0):
    return FAMILIES[family].generate(count, SMALL[family], seed)


# --- generation ------------------------------------------------------------------------------


@pytest.mark.parametrize("family", list(FAMILIES))
def test_generation_is_deterministic_by_seed(family):
    first, again, other = generate(family), generate(family), generate(family, seed=1)
    assert torch.equal(first.inputs, again.inputs) and torch.equal(first.targets, again.targets)
    assert not torch.equal(first.inputs, other.inputs)
    assert len(first) == 4 and first.family == family and first.difficulty == SMALL[family]
    assert len({tuple(row.flatten().tolist()) for row in first.inputs}) == 4


@pytest.mark.parametrize("family", ["mazes", "sudoku"])
def test_fewer_puzzles_are_the_first_of_more(family):
    assert torch.equal(generate(family, count=2).inputs, generate(family, count=4).inputs[:2])


def test_encodings():
    bits = generate("prefix_sums")
    assert bits.inputs.dtype == bits.targets.dtype == torch.int64
    assert bits.inputs.shape == bits.targets.shape == (4, 12)
    assert set(bits.inputs.unique().tolist()) <= {0, 1}
    assert torch.equal(bits.targets[:, 5], bits.inputs[:, :6].sum(dim=1) % 2)
    mazes = generate("mazes")
    assert mazes.inputs.dtype == torch.float32 and mazes.inputs.shape == (4, 3, 9, 9)
    assert mazes.targets.dtype == torch.int64 and mazes.targets.shape == (4, 9, 9)
    sudoku = generate("sudoku")
    assert sudoku.inputs.shape == sudoku.targets.shape == (4, 81)
    assert sudoku.inputs.dtype == sudoku.targets.dtype == torch.int64


@pytest.mark.parametrize(
    ("family", "difficulty"), [("prefix_sums", 0), ("mazes", 1), ("sudoku", 16), ("sudoku", 82)]
)
def test_bad_difficulty_is_a_value_error(family, difficulty):
    with pytest.raises(ValueError, match="difficulty"):
        FAMILIES[family].generate(2, difficulty, 0)


def test_descriptions():
    assert PREFIX_SUMS.description(32) == "32-bit strings"
    assert MAZES.description(9) == "9x9-cell mazes"
    assert SUDOKU.description(36) == "Sudoku with 36 givens"


def open_pairs(is_open):
    return int((is_open[1:] & is_open[:-1]).sum() + (is_open[:, 1:] & is_open[:, :-1]).sum())


def bfs_path(is_open, start, goal):
    """The squares of a path from start to goal (unique in a tree), by breadth-first search."""
    parent = {start: None}
    queue = deque([start])
    while queue:
        row, column = queue.popleft()
        for step in ((row + 1, column), (row - 1, column), (row, column + 1), (row, column - 1)):
            inside = 0 <= step[0] < is_open.shape[0] and 0 <= step[1] < is_open.shape[1]
            if inside and is_open[step] and step not in parent:
                parent[step] = (row, column)
                queue.append(step)
    path, here = [], goal
    while here is not None:
        path.append(here)
        here = parent[here]
    return path, len(parent)


def test_generated_mazes_are_perfect_and_their_targets_the_path():
    mazes = MAZES.generate(6, 5, seed=3)
    for inputs, target in zip(mazes.inputs, mazes.targets, strict=True):
        is_open = inputs[0] > 0.5
        assert not is_open[0].any() and not is_open[-1].any()
        assert not is_open[:, 0].any() and not is_open[:, -1].any()
        start = tuple(inputs[1].nonzero()[0].tolist())
        goal = tuple(inputs[2].nonzero()[0].tolist())
        assert start != goal and all(c % 2 == 1 for c in start + goal)
        assert inputs[1].sum() == inputs[2].sum() == 1
        assert is_open[start] and is_open[goal]
        path, reached = bfs_path(is_open, start, goal)
        assert reached == int(is_open.sum())  # connected
        assert int(is_open.sum()) - 1 == open_pairs(is_open)  # and a tree
        expected = torch.zeros_like(target)
        for square in path:
            expected[square] = 1
        assert torch.equal(target, expected)


def test_generated_sudoku_have_one_solution_and_the_givens_asked():
    sudoku = SUDOKU.generate(3, 26, seed=5)
    for puzzle, solution in zip(sudoku.inputs, sudoku.targets, strict=True):
        assert int((puzzle != 0).sum()) == 26
        assert count_solutions(puzzle.tolist(), limit=3) == 1
        given = puzzle != 0
        assert torch.equal(puzzle[given], solution[given])


def test_subset():
    puzzles = PREFIX_SUMS.parse("01\n10\n11\n", "bits.txt")[0]
    picked = puzzles.subset([2, 0])
    assert picked.inputs.tolist() == [[1, 1], [0, 1]]
    assert picked.names == ("bits.txt puzzle 3 (line 3)", "bits.txt puzzle 1 (line 1)")
    assert len(puzzles.subset(torch.tensor([True, False, True]))) == 2


# --- checkers and scoring ----------------------------------------------------------------------


@pytest.mark.parametrize("family", list(FAMILIES))
def test_checkers_accept_the_targets(family):
    puzzles = generate(family)
    kind = FAMILIES[family]
    assert all(kind.check(x, y) for x, y in zip(puzzles.inputs, puzzles.targets, strict=True))
    assert kind.exact_match(puzzles.targets, puzzles.targets).all()


def test_prefix_sums_checker_rejects_a_flipped_bit():
    puzzles = generate("prefix_sums")
    answer = puzzles.targets[0].clone()
    answer[7] = 1 - answer[7]
    assert not PREFIX_SUMS.check(puzzles.inputs[0], answer)
    assert not PREFIX_SUMS.check(puzzles.inputs[0], answer[:-1])


def test_maze_checker_rejects_broken_paths():
    puzzles = MAZES.generate(1, 5, seed=2)
    inputs, target = puzzles.inputs[0], puzzles.targets[0]
    ends = (inputs[1] + inputs[2]) > 0
    inner = ((target == 1) & ~ends).nonzero()
    gap = target.clone()
    gap[tuple(inner[len(inner) // 2].tolist())] = 0
    assert not MAZES.check(inputs, gap)
    wall = target.clone()
    wall[0, 0] = 1
    assert not MAZES.check(inputs, wall)
    no_goal = target.clone()
    no_goal[inputs[2] > 0] = 0
    assert not MAZES.check(inputs, no_goal)
    assert not MAZES.check(inputs, torch.zeros_like(target))


def test_maze_checker_wants_one_connected_path():
    inputs = torch.zeros(3, 5, 7)
    inputs[0] = 1
    inputs[1, 0, 0] = inputs[2, 0, 2] = 1
    path = torch.zeros(5, 7, dtype=torch.int64)
    path[0, :3] = 1
    assert MAZES.check(inputs, path)
    loop = path.clone()
    loop[3:5, 3:5] = 1  # a separate cycle: every square has two marked neighbours
    assert not MAZES.check(inputs, loop)
    detour = path.clone()
    detour[1, 1] = 1
    assert not MAZES.check(inputs, detour)


def test_sudoku_checker_rejects_swapped_digits_and_changed_givens():
    puzzles = generate("sudoku")
    puzzle, solution = puzzles.inputs[0], puzzles.targets[0]
    blanks = (puzzle == 0).nonzero().flatten().tolist()
    a, b = next((i, j) for i in blanks for j in blanks if solution[i] != solution[j])
    swapped = solution.clone()
    swapped[[a, b]] = swapped[[b, a]]
    assert not SUDOKU.check(puzzle, swapped)
    relabelled = solution % 9 + 1  # still a valid grid, but every given changes
    assert not SUDOKU.check(puzzle, relabelled)
    assert SUDOKU.check(torch.zeros(81, dtype=torch.int64), relabelled)


def test_exact_match_counts_whole_answers():
    puzzles = generate("mazes")
    predictions = puzzles.targets.clone()
    predictions[1, 0, 0] = 1
    assert MAZES.exact_match(predictions, puzzles.targets).tolist() == [True, False, True, True]
    with pytest.raises(ValueError, match="do not match"):
        MAZES.exact_match(predictions[:, :3], puzzles.targets)


# --- text formats --------------------------------------------------------------------------------


@pytest.mark.parametrize("family", list(FAMILIES))
def test_format_and_parse_round_trip(family, tmp_path):
    kind = FAMILIES[family]
    puzzles = generate(family)
    path = tmp_path / f"{family}.txt"
    kind.write(puzzles, path)
    (read,) = kind.read(path)
    assert torch.equal(read.inputs, puzzles.inputs) and torch.equal(read.targets, puzzles.targets)
    assert read.difficulty == puzzles.difficulty and read.family == family
    assert read.names[1].startswith(f"{path} puzzle 2 (line ")


def test_mixed_lengths_give_one_set_per_length():
    text = "# parity\n0110\n\n101\n1111\n"
    short, long = PREFIX_SUMS.parse(text, "bits.txt")
    assert short.difficulty == 3 and short.inputs.tolist() == [[1, 0, 1]]
    assert short.targets.tolist() == [[1, 1, 0]]
    assert long.names == ("bits.txt puzzle 1 (line 2)", "bits.txt puzzle 3 (line 5)")
    assert long.targets.tolist() == [[0, 1, 0, 0], [1, 0, 1, 0]]


def test_mazes_of_two_sizes_and_a_shortest_path():
    small = "#####\n#S.G#\n#####\n"
    room = "\n".join(["#######", "#S....#", "#.###.#", "#...G.#", "#######"]) + "\n"
    three, five = MAZES.parse(f"{small}\n\n{room}", "m.txt")
    assert three.inputs.shape == (1, 3, 3, 5) and three.targets[0, 1].tolist() == [0, 1, 1, 1, 0]
    assert five.names == ("m.txt puzzle 2 (line 6)",)
    assert five.targets[0].sum() == 6 and MAZES.check(five.inputs[0], five.targets[0])
    assert five.difficulty == 3


def test_sudoku_accepts_zeros_and_dots():
    puzzles = generate("sudoku", count=1)
    line = "".join(str(d) for d in puzzles.inputs[0].tolist())
    (read,) = SUDOKU.parse(line + "\n\n", "s.txt")
    assert torch.equal(read.targets, puzzles.targets)


def fault_of(family, text, tmp_path, name="puzzles.txt"):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(PuzzleFileError) as caught:
        FAMILIES[family].read(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    return message[len(f"{path}: ") :]


MAZE_1 = "#####\n#S.G#\n#####\n\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            MAZE_1 + "###\n#S#\n####\n#G#\n###\n",
            "puzzle 2 (line 5): row 3 has width 4, the maze's first row 3",
        ),
        (
            MAZE_1 + "#####\n#Sx.G\n",
            "puzzle 2 (line 5): row 2: bad character 'x' at column 3 "
            "(a maze holds only '#', '.', 'S' and 'G')",
        ),
        (
            "#S.S.G#\n",
            "puzzle 1 (line 1): more than one start 'S' (row 1, column 2 and row 1, column 4)",
        ),
        ("#..G#\n", "puzzle 1 (line 1): no start 'S'"),
        (MAZE_1 + MAZE_1 + "#S..#\n", "puzzle 3 (line 9): no goal 'G'"),
        ("S.#.G\n", "puzzle 1 (line 1): no path from S to G"),
        (
            "S..\n...\n..G\n",
            "puzzle 1 (line 1): ambiguous: more than one shortest path from S to G",
        ),
        ("", "no puzzles (the file is empty)"),
        ("\n\n", "no puzzles (the file is empty)"),
    ],
)
def test_maze_file_faults(text, message, tmp_path):
    assert fault_of("mazes", text, tmp_path) == message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "0101\n01a1\n",
            "puzzle 2 (line 2): bad character 'a' at column 3 (a bit string holds only 0 and 1)",
        ),
        ("", "no puzzles (the file is empty)"),
        ("# nothing here\n", "no puzzles (only comments and blank lines)"),
    ],
)
def test_prefix_sums_file_faults(text, message, tmp_path):
    assert fault_of("prefix_sums", text, tmp_path) == message


SOLVABLE = "4.....8.5.3..........7......2.....6.....8.4......1.......6.3.7.5..2.....1.4......"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("123", "the line has 3 characters, a Sudoku line 81"),
        (
            "x" + "." * 80,
            "bad character 'x' at column 1 "
            "(a Sudoku line holds only digits 1-9 and '.' or '0' for a blank)",
        ),
        ("5.....5" + "." * 74, "the givens break a rule: digit 5 twice in row 1 (columns 1 and 7)"),
        (
            "5" + "." * 8 + "5" + "." * 71,
            "the givens break a rule: digit 5 twice in column 1 (rows 1 and 2)",
        ),
        (
            "5" + "." * 9 + "5" + "." * 70,
            "the givens break a rule: digit 5 twice in box 1 (cells 1 and 5)",
        ),
        ("12345678." + "." * 8 + "9" + "." * 63, "no solution"),
        ("." * 81, "ambiguous: more than one solution"),
    ],
)
def test_sudoku_file_faults(line, message, tmp_path):
    text = f"# puzzles\n{SOLVABLE}\n\n{line}\n"
    assert fault_of("sudoku", text, tmp_path) == f"puzzle 2 (line 4): {message}"


def test_a_hard_sudoku_is_read(tmp_path):
    (read,) = SUDOKU.parse(SOLVABLE + "\n", "hard.txt")
    assert read.difficulty == 17 and SUDOKU.check(read.inputs[0], read.targets[0])


def test_file_errors_are_library_value_errors(tmp_path):
    path = tmp_path / "binary.txt"
    path.write_bytes(b"0101\n\xff\xfe\n")
    with pytest.raises(PuzzleFileError, match=r"line 2: not UTF-8 text") as caught:
        PREFIX_SUMS.read(path)
    assert isinstance(caught.value, EquilibriaError) and isinstance(caught.value, ValueError)


# --- cache ---------------------------------------------------------------------------------------


def test_load_puzzles_writes_once_and_reads_back(tmp_path, monkeypatch):
    first = load_puzzles("mazes", 3, 4, 7, tmp_path)
    path = cache_path(tmp_path, "mazes", 3, 4, 7)
    assert path.is_file() and len(list(tmp_path.iterdir())) == 1
    written = path.stat().st_mtime_ns

    def no_generation(*args):
        raise AssertionError("generated again")

    monkeypatch.setattr(MAZES, "generate", no_generation)
    again = load_puzzles("mazes", 3, 4, 7, tmp_path)
    assert isinstance(again, PuzzleSet) and again.difficulty == 4 and again.family == "mazes"
    assert torch.equal(again.inputs, first.inputs) and torch.equal(again.targets, first.targets)
    assert path.stat().st_mtime_ns == written


def test_a_corrupt_cache_file_is_generated_again(tmp_path):
    path = cache_path(tmp_path, "prefix_sums", 5, 8, 1)
    path.write_bytes(b"not a torch file")
    puzzles = load_puzzles("prefix_sums", 5, 8, 1, tmp_path)
    assert torch.equal(puzzles.inputs, PREFIX_SUMS.generate(5, 8, 1).inputs)
    assert torch.equal(load_puzzles("prefix_sums", 5, 8, 1, tmp_path).inputs, puzzles.inputs)


def test_unknown_family_names_the_valid_ones():
    with pytest.raises(ValueError, match="prefix_sums, mazes, sudoku"):
        load_puzzles("chess", 1, 1, 0, None)
    with pytest.raises(ValueError, match="prefix_sums, mazes, sudoku"):
        get_family("chess")
    assert len(load_puzzles("sudoku", 2, 40, 0, None)) == 2


# --- pictures ------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", list(FAMILIES))
def test_pictures(family, tmp_path):
    pytest.importorskip("matplotlib")
    from equilibria.puzzles.data.pictures import draw_puzzles

    puzzles = generate(family, count=3)
    predictions = puzzles.targets.clone()
    flat = predictions[0].view(-1)
    flat[0] = 2 if family == "sudoku" and flat[0] == 1 else 1
    path = tmp_path / f"{family}.png"
    draw_puzzles(family, puzzles.inputs, predictions, puzzles.targets, path, title="t", limit=2)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
