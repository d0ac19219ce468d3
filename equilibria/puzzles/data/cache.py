"""Generated puzzle sets, cached as torch files so that a run does not generate them twice."""

from __future__ import annotations

import io
from pathlib import Path

import torch

from ...files import atomic_write_bytes
from .base import PuzzleSet
from .registry import get_family

FORMAT_VERSION = 1  # bump when a generator or an encoding changes


def cache_path(cache_dir: str | Path, family: str, count: int, difficulty: int, seed: int) -> Path:
    """The cache file of one generated set."""
    name = f"{family}-count{count}-difficulty{difficulty}-seed{seed}-v{FORMAT_VERSION}.pt"
    return Path(cache_dir).expanduser() / name


def load_puzzles(
    family: str, count: int, difficulty: int, seed: int, cache_dir: str | Path | None = None
) -> PuzzleSet:
    """The set `FAMILIES[family].generate(count, difficulty, seed)`, read from `cache_dir` when
    it holds it and written there otherwise (None: no cache). A cache file that cannot be read
    or does not hold that set is generated again and overwritten."""
    generator = get_family(family)
    if cache_dir is None:
        return generator.generate(count, difficulty, seed)
    path = cache_path(cache_dir, family, count, difficulty, seed)
    cached = _read(path, family, count, difficulty)
    if cached is not None:
        return cached
    puzzles = generator.generate(count, difficulty, seed)
    buffer = io.BytesIO()
    torch.save(
        {
            "version": FORMAT_VERSION,
            "family": family,
            "difficulty": difficulty,
            "inputs": puzzles.inputs,
            "targets": puzzles.targets,
        },
        buffer,
    )
    atomic_write_bytes(path, buffer.getvalue())
    return puzzles


def _read(path: Path, family: str, count: int, difficulty: int) -> PuzzleSet | None:
    """The set cached at `path`, or None when it is missing, unreadable or not that set."""
    if not path.is_file():
        return None
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True)
        inputs, targets = stored["inputs"], stored["targets"]
        valid = (
            stored["version"] == FORMAT_VERSION
            and stored["family"] == family
            and stored["difficulty"] == difficulty
            and isinstance(inputs, torch.Tensor)
            and isinstance(targets, torch.Tensor)
            and inputs.shape[0] == count
            and targets.shape[0] == count
        )
    except Exception:  # any damage to the file: generate the set again
        return None
    return PuzzleSet(family, inputs, targets, difficulty) if valid else None
