"""A whole training run: data, model, training (or its resumption), then the report."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import Config
from ..data import load_data
from ..models import build_model
from .checkpoint import FILENAME, CheckpointError
from .distributed import Runtime
from .loop import StepHook
from .metrics import write_json
from .report import finalize
from .trainer import Trainer


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


def train(
    config: Config,
    out: Path,
    runtime: Runtime | None = None,
    *,
    checkpoint: dict | None = None,
    on_step: StepHook | None = None,
    log: Callable[[str], None] = print,
) -> RunResult:
    """Train the model `config` describes, writing everything into `out`.

    With `checkpoint` (the contents of `load_checkpoint`), continue that run where it stopped.
    Rank 0 writes `config.json`, `metrics.jsonl`, `checkpoint.pt`, the plots and `summary.json`.
    """
    started = time.perf_counter()
    runtime = runtime or Runtime()
    out = Path(out)
    check_new_run(out, checkpoint)
    data = load_data(config.data.dataset, config.data.data_dir, download=config.data.download)
    data = data.with_train_samples(config.data.train_samples)
    torch.manual_seed(config.run.seed)
    model = build_model(config, data.shape, data.classes)
    write_run_config(config, out, runtime)
    trainer = Trainer(
        config, data, model, runtime, out, checkpoint=checkpoint, on_step=on_step, log=log
    )
    if runtime.is_main:
        parameters = sum(p.numel() for p in model.parameters())
        where = (
            f"{runtime.world_size} processes on {runtime.device.type}"
            if runtime.distributed
            else str(runtime.device)
        )
        log(
            f"{config.model.arch} ({parameters:,} parameters) on {data.name} "
            f"({len(data.train)} train / {len(data.test)} test), {where}; writing to {out}"
        )
    outcome = trainer.run()
    result = RunResult(outcome.status, out, trainer.checkpoint_path, signal=outcome.signal)
    if outcome.status == "finished":
        result.summary = finalize(
            config,
            data,
            trainer.tested_model,
            runtime,
            out,
            outcome.state.history,
            outcome.state.progress.train_seconds,
        )
    result.total_seconds = time.perf_counter() - started
    if result.summary is not None:
        s = result.summary
        nfe = f", mean forward NFE {s['mean_forward_nfe']:.1f}" if s["mean_forward_nfe"] else ""
        result.headline = (
            f"test accuracy {100 * s['test_accuracy']:.2f}%{nfe}, "
            f"{trained_in(s['train_seconds'], result.total_seconds)}"
        )
    return result
