"""From a saved run to one's own code: `load_run(RUN)` is the trained model of any task that can
`load_model`, with its config, its summary and what its inputs are made with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import Config
from ..files import read_json
from ..training.checkpoint import CheckpointError, find_checkpoint, load_checkpoint, stored_config
from ..training.distributed import resolve_device
from ..training.summary import SUMMARY
from . import task_for


@dataclass
class LoadedRun:
    """A trained run, ready for one's own inputs.

    Attributes:
        model: the trained model in eval mode on `device` (the weight average when the run
            kept one). classify: `model(x)` is the logits (n, classes); lm: `model(tokens)`
            the next-character logits (n, length, vocabulary); ssl: a `ContrastiveModel`,
            whose `model.backbone(x)` is the pooled features (n, feature_dim).
        config: the run's config as it trained (`Config.for_task` values filled in).
        task: the run's task (`run.task`).
        path: the checkpoint file read.
        summary: the run's `summary.json`, or None when the run did not finish.
        data: what inputs are made with, without the training data. classify and ssl: an
            `ImageData` holding no images, with `shape` (channels, height, width), `classes`
            and the normalization: `data.inputs(images)` turns images (n, *shape) of pixel
            values 0 .. `data.max_value` (255; 16 for digits) into what the model takes, as
            training did; lm: the `Vocabulary` (`encode(text)` the tokens, `decode`).
        device: where the model is.
    """

    model: nn.Module
    config: Config
    task: str
    path: Path
    summary: dict[str, Any] | None
    data: Any
    device: torch.device


def load_run(path: str | Path, device: str | torch.device | None = None) -> LoadedRun:
    """The trained run at `path` (a run folder or its checkpoint file), its model on `device`
    ("cpu", "cuda", "cuda:1", "auto" or a torch.device; None: the CPU).

    Raises CheckpointError for a missing or unreadable checkpoint, ConfigError for a run whose
    task offers no `load_model` (naming the tasks that do) or a device that is not there."""
    file = find_checkpoint(path)
    checkpoint = load_checkpoint(file)
    config = stored_config(file, checkpoint).for_task()
    task = task_for(file, config.run.task, "load_model", "load_run")
    target = device if isinstance(device, torch.device) else resolve_device(device or "cpu")
    try:
        model = task.load_model(config, checkpoint)
        data = task.model_data(config, checkpoint) if task.model_data is not None else None
    except CheckpointError as error:
        raise CheckpointError(f"{file}: {error}") from None
    summary = None
    if checkpoint["progress"].finished and (file.parent / SUMMARY).is_file():
        summary = read_json(file.parent / SUMMARY)
    return LoadedRun(
        model=model.to(target).eval(),
        config=config,
        task=task.name,
        path=file,
        summary=summary,
        data=data,
        device=target,
    )
