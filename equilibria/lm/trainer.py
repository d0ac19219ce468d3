"""The language-model training loop: epochs of random windows, validation, checkpoints.

An epoch is `lm.steps_per_epoch` steps; step k draws its `data.batch_size` windows from a
generator seeded by (run.seed, k), so a resumed run sees exactly the windows (and dropout
masks) that an uninterrupted one would.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import Config
from ..data.text import TextData
from ..training.checkpoint import FILENAME, CheckpointError, restore_model, save_checkpoint
from ..training.distributed import Runtime
from ..training.interrupt import StopRequest
from ..training.metrics import Meter, write_jsonl
from ..training.optim import build_optimizer, build_scheduler
from ..training.progress import ProgressBar
from ..training.sampling import step_seed
from ..training.trainer import Outcome, StepHook, TrainState
from .engine import LN2, evaluate, train_step


class LMTrainer:
    """Trains a language model on `data` as `config` says, writing checkpoint and metrics to
    `out`; `checkpoint` (the contents of `load_checkpoint`) resumes a run."""

    def __init__(
        self,
        config: Config,
        data: TextData,
        model: nn.Module,
        runtime: Runtime,
        out: Path,
        *,
        checkpoint: dict | None = None,
        on_step: StepHook | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        self.config, self.data, self.runtime, self.out = config, data, runtime, Path(out)
        self.model = model.to(runtime.device)
        self.steps_per_epoch = config.lm.steps_per_epoch
        self.optimizer = build_optimizer(config.optim, self.model.parameters())
        self.scheduler = build_scheduler(self.optimizer, config.optim, self.steps_per_epoch)
        self.state = TrainState()
        if checkpoint is not None:
            self._restore(checkpoint)
        self.on_step, self.log = on_step, log
        self.step_seconds = 0.0  # time inside training steps (this session), for tokens/s
        self.step_tokens = 0

    @property
    def checkpoint_path(self) -> Path:
        return self.out / FILENAME

    def _restore(self, checkpoint: dict) -> None:
        source = str(self.checkpoint_path)
        stored = checkpoint.get("data", {}).get("vocab")
        if stored != self.data.vocab.chars:
            raise CheckpointError(
                f"the text of this run has another vocabulary than the one in {source}; "
                "resume with the same lm.text"
            )
        restore_model(self.model, checkpoint["model"], source)
        try:
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            self.scheduler.load_state_dict(checkpoint["scheduler"])
            meter = Meter(**checkpoint["meter"])
            history = [dict(row) for row in checkpoint["history"]]
        except (ValueError, KeyError, TypeError, RuntimeError) as error:
            raise CheckpointError(
                f"the optimizer, schedule or metrics in {source} do not fit the run its config "
                f"describes: {error}"
            ) from None
        self.state = TrainState(checkpoint["progress"], history, meter)

    def save(self) -> None:
        save_checkpoint(
            self.checkpoint_path,
            config=self.config.to_dict(),
            model=self.model.state_dict(),
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            progress=self.state.progress,
            history=self.state.history,
            meter=self.state.meter.state(),
            data={"name": self.data.name, "vocab": self.data.vocab.chars},
            world_size=1,
        )

    def run(self) -> Outcome:
        """Train until `optim.epochs` epochs are done or a stop is requested."""
        progress = self.state.progress
        with StopRequest() as stop:
            while progress.epoch < self.config.optim.epochs:
                started = time.perf_counter()
                if self._epoch(stop):
                    progress.train_seconds += time.perf_counter() - started
                    self.save()
                    return Outcome("interrupted", self.state, stop.signal_name or "SIGINT")
                self._finish_epoch(started)
                if stop.requested:
                    return Outcome("interrupted", self.state, stop.signal_name or "SIGINT")
        progress.finished = True
        self.save()
        return Outcome("finished", self.state)

    def _windows(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        lm, device = self.config.lm, self.runtime.device
        length = lm.seq_len + lm.memory
        generator = torch.Generator().manual_seed(step_seed(self.config.run.seed, step))
        starts = self.data.random_starts(self.config.data.batch_size, length, generator)
        inputs, targets = self.data.windows(self.data.train, starts, length)
        return inputs.to(device), targets.to(device)

    def _epoch(self, stop: StopRequest) -> bool:
        """Run the rest of the current epoch; True when stopped early on request."""
        progress, config = self.state.progress, self.config
        bar = ProgressBar(
            self.steps_per_epoch,
            initial=progress.step_in_epoch,
            description=f"epoch {progress.epoch + 1}/{config.optim.epochs}",
            enabled=config.run.progress,
        )
        with bar:
            while progress.step_in_epoch < self.steps_per_epoch:
                inputs, targets = self._windows(progress.global_step)
                torch.manual_seed(step_seed(config.run.seed, progress.global_step, 1))
                started = time.perf_counter()
                sums = train_step(
                    self.model,
                    inputs,
                    targets,
                    self.optimizer,
                    self.scheduler,
                    memory=config.lm.memory,
                    precision=config.run.precision,
                    label_smoothing=config.optim.label_smoothing,
                    grad_clip=config.optim.grad_clip,
                )
                self.step_seconds += time.perf_counter() - started
                self.step_tokens += int(sums["samples"])
                self.state.meter.add(**sums)
                progress.step_in_epoch += 1
                progress.global_step += 1
                bar.update(self.state.meter)
                if self.on_step is not None:
                    self.on_step(progress.global_step)
                if stop.requested:
                    return True
        return False

    def validate(self) -> dict[str, Any]:
        """Validation metrics of the current weights."""
        config = self.config
        return evaluate(
            self.model,
            self.data,
            seq_len=config.lm.seq_len,
            memory=config.lm.memory,
            characters=config.lm.eval_chars,
            batch_size=config.data.eval_batch_size,
            device=self.runtime.device,
            precision=config.run.precision,
        )

    def _finish_epoch(self, started: float) -> None:
        progress, config = self.state.progress, self.config
        means = self.state.meter.means()
        if getattr(self.model, "stats", None) is None:  # an explicit model runs no solver
            means = {k: v for k, v in means.items() if "nfe" not in k and "resid" not in k}
            means = {k: v for k, v in means.items() if "converged" not in k and "jacob" not in k}
        val = self.validate()
        seconds = time.perf_counter() - started
        progress.train_seconds += seconds
        progress.epoch += 1
        progress.step_in_epoch = 0
        record = {
            "epoch": progress.epoch,
            "step": progress.global_step,
            "lr": self.scheduler.get_last_lr()[0],
            **means,
            "train_bpc": means["train_loss"] / LN2,
            **{f"val_{k}": v for k, v in val.items()},
            "epoch_seconds": seconds,
            "train_seconds": progress.train_seconds,
        }
        self.state.history.append(record)
        self.state.meter = Meter()
        self.save()
        write_jsonl(self.out / "metrics.jsonl", self.state.history)
        self.log(describe_epoch(record, config.optim.epochs))


def describe_epoch(record: dict[str, Any], epochs: int) -> str:
    """One line about a finished epoch."""
    parts = [
        f"epoch {record['epoch']}/{epochs}",
        f"train {record['train_bpc']:.3f} bpc",
        f"val {record['val_bpc']:.3f} bpc",
        f"val accuracy {100 * record['val_accuracy']:.1f}%",
    ]
    if record.get("train_forward_nfe") is not None:
        parts.append(
            f"nfe {record['train_forward_nfe']:.1f}/{record['train_backward_nfe']:.1f} "
            f"(val {record['val_forward_nfe']:.1f})"
        )
    parts.append(f"{record['train_seconds']:.1f} s")
    return "  ".join(parts)
