"""Character-level language modelling as a task (`run.task=lm`): what `run_task` trains, and what
a saved run can do (evaluate, give a learned solver its inputs, write text)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ..config import Config, ConfigError
from ..data.text import TextData, load_text
from ..tasks import Task
from ..training.distributed import Runtime
from .evaluate import evaluate_run, explicit_model
from .model import build_language_model, context_length
from .report import finalize
from .restore import checkpoint_vocabulary, trained_language_model
from .sample import sample_run
from .solver_inputs import solver_inputs
from .trainer import LMTrainer


def check(config: Config, runtime: Runtime, checkpoint: dict | None) -> None:
    """One process, and no weight average."""
    if runtime.distributed:
        raise ConfigError("the lm task trains in one process; launch it without torchrun")
    if config.optim.average:
        raise ConfigError(
            f"optim.average={config.optim.average} (a moving average of the weights) is not "
            "available for the lm task; set optim.average=0"
        )


def training_text(config: Config) -> TextData:
    """The text [lm] names, split, checked to hold at least one training window."""
    lm = config.lm
    data = load_text(lm.text, lm.val_fraction)
    what = "lm.seq_len + lm.memory" if lm.memory else "lm.seq_len"
    data.check_length(context_length(config), what)
    return data


def language_model(config: Config, data: TextData) -> nn.Module:
    return build_language_model(config, len(data.vocab))


def announce(config: Config, data: TextData, trainer: LMTrainer, out: Path) -> str:
    parameters = sum(p.numel() for p in trainer.model.parameters())
    return (
        f"{config.lm.network} transformer ({parameters:,} parameters) on {data.description}; "
        f"{trainer.runtime.device}; writing to {out}"
    )


def finish(config: Config, data: TextData, trainer: LMTrainer, out: Path) -> dict[str, Any]:
    state = trainer.state
    speed = trainer.step_tokens / trainer.step_seconds if trainer.step_seconds else None
    return finalize(
        config,
        data,
        trainer.model,
        out,
        state.history,
        train_seconds=state.progress.train_seconds,
        tokens_per_second=speed,
    )


def headline(summary: dict[str, Any]) -> str:
    nfe = summary["val_forward_nfe"]
    return f"validation {summary['val_bpc']:.3f} bits per character" + (
        f", mean forward NFE {nfe:.1f}" if nfe else ""
    )


TASK = Task(
    name="lm",
    noun="a language model",
    section="lm",
    load_data=training_text,
    build_model=language_model,
    trainer=LMTrainer,
    announce=announce,
    finalize=finish,
    headline=headline,
    check=check,
    explicit_model=explicit_model,
    reads_images=False,
    evaluate=evaluate_run,
    solver_inputs=solver_inputs,
    sample=sample_run,
    load_model=trained_language_model,
    model_data=checkpoint_vocabulary,
)
