"""A whole training run of any task: checks, data, model, training (or its resumption), report.

`run_task` is the one sequence every task goes through; what differs between tasks comes from
their `Task` (see `contract`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import Config
from ..files import write_json
from ..training.checkpoint import FILENAME, CheckpointError
from ..training.distributed import Runtime
from ..training.loop import StepHook
from ..training.run_lock import hold_run
from . import get_task


@dataclass
class RunResult:
    """`status` is "finished" or "interrupted"; `summary` and `headline` (one line for the
    command line) are set on rank 0 when finished."""

    status: str
    out: Path
    checkpoint: Path
    summary: dict[str, Any] | None = None
    signal: str | None = None
    total_seconds: float = 0.0
    headline: str = ""


def check_new_run(out: Path, checkpoint: dict | None) -> None:
    """Refuse to start a new run (no `checkpoint` to continue) in a folder that holds one."""
    if checkpoint is None and (out / FILENAME).exists():
        raise CheckpointError(
            f"{out} already holds a run ({out / FILENAME}); continue it with --resume {out}, "
            "or choose another --out"
        )


def write_run_config(config: Config, out: Path, runtime: Runtime) -> None:
    """Create `out` and write the run's `config.json` there (rank 0)."""
    if runtime.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "config.json", config.to_dict())


def trained_in(train_seconds: float, total_seconds: float) -> str:
    """The end of a run's headline: its training time and its time in all."""
    return f"trained in {train_seconds:.1f} s ({total_seconds:.1f} s in all)"


def run_task(
    config: Config,
    out: Path,
    runtime: Runtime | None = None,
    *,
    checkpoint: dict | None = None,
    on_step: StepHook | None = None,
    log: Callable[[str], None] = print,
) -> RunResult:
    """Train the task `config.run.task` as `config` describes, writing everything into `out`.

    With `checkpoint` (the contents of `load_checkpoint`), continue that run where it stopped.
    Keys left at none take the task's value (`Config.for_task`). Rank 0 writes `config.json`
    (with those values), `metrics.jsonl`, `checkpoint.pt`, the task's plots and
    `summary.json`.
    """
    started = time.perf_counter()
    config = config.for_task()  # the values a run trains with, as config.json records them
    task = get_task(config.run.task)
    if task.resolve is not None:
        config = task.resolve(config)
    runtime = runtime or Runtime()
    out = Path(out)
    if task.check is not None:
        task.check(config, runtime, checkpoint)
    # one process trains a folder at a time: a second (a --resume while this one still
    # trains) is refused in one line instead of racing on the checkpoint
    with hold_run(out) if runtime.is_main else nullcontext():
        check_new_run(out, checkpoint)
        data = task.load_data(config)
        torch.manual_seed(config.run.seed)
        model = task.build_model(config, data)
        write_run_config(config, out, runtime)
        trainer = task.trainer(
            config, data, model, runtime, out, checkpoint=checkpoint, on_step=on_step, log=log
        )
        if runtime.is_main:
            log(task.announce(config, data, trainer, out))
        outcome = trainer.run()
        result = RunResult(outcome.status, out, trainer.checkpoint_path, signal=outcome.signal)
        if outcome.status == "finished":
            result.summary = task.finalize(config, data, trainer, out)
    result.total_seconds = time.perf_counter() - started
    if result.summary is not None:
        s = result.summary
        result.headline = (
            f"{task.headline(s)}, {trained_in(s['train_seconds'], result.total_seconds)}"
        )
    return result
