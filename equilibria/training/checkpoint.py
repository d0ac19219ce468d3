"""Training checkpoints: written atomically, read back with clear errors when they are not usable.

A checkpoint holds the config, the model, optimizer and scheduler states, where training stood
(epoch, step within it, elapsed time), the partial sums of the epoch in progress and the metrics
of every finished epoch: everything needed to continue as if the run had never stopped.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import Config
from ..errors import ConfigError, EquilibriaError
from ..files import atomic_write_bytes

FORMAT = "equilibria-checkpoint"
VERSION = 1
FILENAME = "checkpoint.pt"
REQUIRED = ("config", "model", "optimizer", "scheduler", "progress", "history", "meter")


class CheckpointError(EquilibriaError, RuntimeError):
    """A checkpoint is missing, unreadable, of another format, or does not fit the model."""


@dataclass
class Progress:
    """Where training stands: `epoch` epochs done, plus `step_in_epoch` steps of the next."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    train_seconds: float = 0.0
    finished: bool = False


def save_checkpoint(path: Path, **contents: Any) -> None:
    """Save `contents` (the `REQUIRED` entries and any others) atomically to `path`."""
    missing = [k for k in REQUIRED if k not in contents]
    if missing:
        raise ValueError(f"save_checkpoint needs {', '.join(missing)}")
    progress = contents["progress"]
    if isinstance(progress, Progress):
        contents["progress"] = asdict(progress)
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, **contents}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def find_checkpoint(path: str | Path) -> Path:
    """The checkpoint file for `path`: the file itself, or `checkpoint.pt` in a run folder."""
    path = Path(path).expanduser()
    if path.is_dir():
        candidate = path / FILENAME
        if not candidate.is_file():
            raise CheckpointError(f"no checkpoint in {path}: expected the file {candidate}")
        return candidate
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: the file does not exist")
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """The contents of the checkpoint at `path` (a file or a run folder), checked for shape."""
    path = find_checkpoint(path)
    if not zipfile.is_zipfile(path):
        size = path.stat().st_size
        raise CheckpointError(
            f"{path} is not a readable checkpoint: it is not a torch archive ({size} bytes; "
            "corrupt, truncated or another kind of file)"
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise CheckpointError(
            f"{path} is not an equilibria checkpoint: it holds objects other than tensors and "
            f"plain values, which are not loaded for safety ({first[:160]})"
        ) from None
    except (
        RuntimeError,
        EOFError,
        OSError,
        ValueError,
        zipfile.BadZipFile,
        AttributeError,
        KeyError,
        IndexError,
    ) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(
            f"{path} is not a readable checkpoint (corrupt, truncated or not a torch file): "
            f"{reason[:200]}"
        ) from None
    if not isinstance(state, Mapping) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is a torch file but not an equilibria training checkpoint (no "
            f"format marker {FORMAT!r})"
        )
    version = state.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version!r}; this equilibria reads versions "
            f"up to {VERSION} (upgrade equilibria to read it)"
        )
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise CheckpointError(f"{path} is incomplete: it lacks {', '.join(missing)}")
    try:
        state = dict(state)
        state["progress"] = Progress(**state["progress"])
    except TypeError as error:
        raise CheckpointError(f"{path} has an unreadable progress record: {error}") from None
    return state


def restore_model(model: nn.Module, weights: Mapping[str, torch.Tensor], source: str) -> None:
    """Load `weights` into `model`, or raise CheckpointError listing every mismatch."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    reshaped = [
        f"{k} (checkpoint {tuple(weights[k].shape)}, model {tuple(v.shape)})"
        for k, v in expected.items()
        if k in weights and tuple(weights[k].shape) != tuple(v.shape)
    ]
    problems = []
    for label, names in (("missing", missing), ("unexpected", unexpected), ("shape", reshaped)):
        if names:
            shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise CheckpointError(
            f"the weights in {source} do not fit the model built from its config "
            f"({'; '.join(problems)})"
        )
    try:
        model.load_state_dict(weights)
    except (RuntimeError, TypeError) as error:
        raise CheckpointError(f"the weights in {source} cannot be loaded: {error}") from None


def stored_config(path: Path, checkpoint: Mapping[str, Any]) -> Config:
    """The config stored in `checkpoint` (read from `path`), with a clear error when this
    version cannot read it."""
    try:
        return Config.from_dict(checkpoint["config"])
    except ConfigError as error:
        raise CheckpointError(f"the config stored in {path} is not valid here: {error}") from None
