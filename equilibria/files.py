"""Writing files safely: atomic writes, JSON and JSON-lines, and PNG figures.

Every file the library writes goes through `atomic_write_bytes`, so a reader (or a run stopped
half-way) sees either the old file or the whole new one, never a torn one.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .extras import require

FIGURE_DPI = 110


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a reader sees either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    try:  # make the rename itself durable (not possible on every platform)
        directory = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(directory)
    except OSError:
        pass
    finally:
        os.close(directory)


def write_json(path: Path, value: Any) -> None:
    """Write `value` as indented JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(value, indent=2) + "\n").encode())


def write_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """Write one JSON object per line, atomically (the whole file is rewritten)."""
    text = "".join(json.dumps(record, sort_keys=False) + "\n" for record in records)
    atomic_write_bytes(path, text.encode())


def read_json(path: Path) -> Any:
    """The value a JSON file holds."""
    return json.loads(Path(path).read_text())


def pyplot(purpose: str = "the plots of a run") -> Any:
    """matplotlib's pyplot with the file-only Agg backend (a clear error, naming `purpose`, when
    matplotlib is missing)."""
    matplotlib = require("matplotlib", purpose)
    matplotlib.use("Agg")
    return require("matplotlib.pyplot", purpose)


def write_figure(figure: Any, path: Path) -> None:
    """Write a matplotlib `figure` to `path` as a PNG, atomically, and close it."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=FIGURE_DPI)
    atomic_write_bytes(path, buffer.getvalue())
    pyplot().close(figure)
