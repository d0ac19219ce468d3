"""A whole language-model run (`equilibria train --task lm`): text, model, training, report."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..config import Config, ConfigError
from ..data.text import load_text
from ..training.distributed import Runtime
from ..training.loop import StepHook
from ..training.run import RunResult, check_new_run, trained_in, write_run_config
from .model import build_language_model, context_length
from .report import finalize
from .trainer import LMTrainer


def train(
    config: Config,
    out: Path,
    runtime: Runtime | None = None,
    *,
    checkpoint: dict | None = None,
    on_step: StepHook | None = None,
    log: Callable[[str], None] = print,
) -> RunResult:
    """Train the character language model `config` describes, writing everything into `out`:
    `config.json`, `metrics.jsonl`, `checkpoint.pt`, `curves.png`, `sample.txt` and
    `summary.json`. With `checkpoint` (from `load_checkpoint`), continue that run."""
    started = time.perf_counter()
    runtime = runtime or Runtime()
    if runtime.distributed:
        raise ConfigError("the lm task trains in one process; launch it without torchrun")
    if config.optim.average:
        raise ConfigError(
            f"optim.average={config.optim.average} (a moving average of the weights) is not "
            "available for the lm task; set optim.average=0"
        )
    out = Path(out)
    check_new_run(out, checkpoint)
    lm = config.lm
    data = load_text(lm.text, lm.val_fraction)
    what = "lm.seq_len + lm.memory" if lm.memory else "lm.seq_len"
    data.check_length(context_length(config), what)
    torch.manual_seed(config.run.seed)
    model = build_language_model(config, len(data.vocab))
    write_run_config(config, out, runtime)
    trainer = LMTrainer(
        config, data, model, runtime, out, checkpoint=checkpoint, on_step=on_step, log=log
    )
    parameters = sum(p.numel() for p in model.parameters())
    log(
        f"{lm.network} transformer ({parameters:,} parameters) on {data.description}; "
        f"{runtime.device}; writing to {out}"
    )
    outcome = trainer.run()
    result = RunResult(outcome.status, out, trainer.checkpoint_path, signal=outcome.signal)
    if outcome.status == "finished":
        speed = trainer.step_tokens / trainer.step_seconds if trainer.step_seconds else None
        result.summary = finalize(
            config,
            data,
            trainer.model,
            out,
            outcome.state.history,
            train_seconds=outcome.state.progress.train_seconds,
            tokens_per_second=speed,
        )
    result.total_seconds = time.perf_counter() - started
    if result.summary is not None:
        s = result.summary
        nfe = f", mean forward NFE {s['val_forward_nfe']:.1f}" if s["val_forward_nfe"] else ""
        result.headline = (
            f"validation {s['val_bpc']:.3f} bits per character{nfe}, "
            f"{trained_in(s['train_seconds'], result.total_seconds)}"
        )
    return result
