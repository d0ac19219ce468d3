"""Image classification as a task (`run.task=classify`, the default): what `run_task` trains."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import Config
from ..data import ImageData
from ..tasks import Task
from .evaluate import evaluate_run
from .report import finalize
from .setup import classifier, explicit_model, recorded_images, trained_classifier, training_data
from .solver_inputs import solver_inputs
from .trainer import Trainer


def announce(config: Config, data: ImageData, trainer: Trainer, out: Path) -> str:
    runtime = trainer.runtime
    parameters = sum(p.numel() for p in trainer.model.parameters())
    where = (
        f"{runtime.world_size} processes on {runtime.device.type}"
        if runtime.distributed
        else str(runtime.device)
    )
    return (
        f"{config.model.arch} ({parameters:,} parameters) on {data.name} "
        f"({len(data.train)} train / {len(data.test)} test), {where}; writing to {out}"
    )


def finish(config: Config, data: ImageData, trainer: Trainer, out: Path) -> dict[str, Any] | None:
    state = trainer.state
    return finalize(
        config,
        data,
        trainer.tested_model,
        trainer.runtime,
        out,
        state.history,
        state.progress.train_seconds,
    )


def headline(summary: dict[str, Any]) -> str:
    nfe = summary["mean_forward_nfe"]
    return f"test accuracy {100 * summary['test_accuracy']:.2f}%" + (
        f", mean forward NFE {nfe:.1f}" if nfe else ""
    )


TASK = Task(
    name="classify",
    noun="an image classifier",
    section=None,
    load_data=training_data,
    build_model=classifier,
    trainer=Trainer,
    announce=announce,
    finalize=finish,
    headline=headline,
    explicit_model=explicit_model,
    run_name=lambda config: f"{config.data.dataset}-{config.model.arch}",
    evaluate=evaluate_run,
    solver_inputs=solver_inputs,
    load_model=trained_classifier,
    model_data=recorded_images,
)
