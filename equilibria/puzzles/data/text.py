"""Reading the plain-text puzzle files: their lines or blocks, and the one-line error."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from pathlib import Path
from typing import TypeVar

from ...errors import EquilibriaError

T = TypeVar("T")


class PuzzleFileError(EquilibriaError, ValueError):
    """A puzzle file does not hold what its format promises; the one-line message names the
    file, the puzzle (number and first line) and the fault."""


def read_text(path: str | Path) -> str:
    """The UTF-8 text of the file at `path` (a PuzzleFileError when it is not UTF-8 text)."""
    raw = Path(path).expanduser().read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise PuzzleFileError(
            f"{path}: line {line}: not UTF-8 text (byte {error.start} is "
            f"{raw[error.start : error.start + 1]!r})"
        ) from None


def puzzle_name(source: str, number: int, line: int) -> str:
    """How a puzzle read from a file is named: "mazes.txt puzzle 3 (line 25)"."""
    return f"{source} puzzle {number} (line {line})"


def fault(source: str, number: int, line: int, message: str) -> PuzzleFileError:
    """The error for a fault of puzzle `number`, which starts at `line` of `source`."""
    return PuzzleFileError(f"{source}: puzzle {number} (line {line}): {message}")


def no_puzzles(source: str, text: str) -> PuzzleFileError:
    """The error for a file that holds no puzzle."""
    what = "the file is empty" if not text.strip() else "only comments and blank lines"
    return PuzzleFileError(f"{source}: no puzzles ({what})")


def puzzle_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of each puzzle line: surrounding whitespace is dropped, and blank
    lines and lines starting with `#` are skipped."""
    lines = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if line and not line.startswith("#"):
            lines.append((number, line))
    return lines


def blocks(text: str) -> list[tuple[int, list[str]]]:
    """(first line number, rows) of each block of lines between blank lines; trailing
    whitespace of a row is dropped."""
    found: list[tuple[int, list[str]]] = []
    current: list[str] = []
    start = 0
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.rstrip()
        if not line:
            if current:
                found.append((start, current))
            current = []
            continue
        if not current:
            start = number
        current.append(line)
    if current:
        found.append((start, current))
    return found


def bad_character(line: str, allowed: str) -> tuple[int, str] | None:
    """(1-based column, character) of the first character of `line` not in `allowed`."""
    for column, char in enumerate(line, start=1):
        if char not in allowed:
            return column, char
    return None


def group(items: Iterable[T], key: Callable[[T], Hashable]) -> list[list[T]]:
    """`items` in groups of equal `key`, groups in sorted key order, items in their order."""
    groups: dict[Hashable, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return [groups[k] for k in sorted(groups)]  # type: ignore[type-var]
