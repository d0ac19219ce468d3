"""The skeleton every training loop shares: epochs of seeded steps, an end-of-epoch record,
checkpoints, and a clean stop on Ctrl-C or SIGTERM.

A task subclasses `EpochLoop` and supplies only what is its own: its steps per epoch
(`_count_steps`) and set-up (`_prepare`), the batches of an epoch (`_epoch_batches`), one
training step (`_step`), the fields its epoch record adds (its evaluation, `_epoch_fields`), the
extra checkpoint entries (`_checkpoint_extras`) and what the line about an epoch says
(`_epoch_parts`). Everything else — the resumable step counter, the
per-step seeds, the progress bar, the time bookkeeping and the files — lives here once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch
from torch import nn

from ..config import Config
from ..files import write_jsonl
from ..stability.draws import shared_draws
from .checkpoint import FILENAME, CheckpointError, Progress, save_checkpoint
from .distributed import Runtime
from .equilibrium import adjoint_parts, epoch_warnings
from .interrupt import StopRequest
from .metrics import Meter
from .optim import build_optimizer, build_scheduler
from .progress import ProgressBar
from .sampling import step_seed

StepHook = Callable[[int], None]
DataT = TypeVar("DataT")  # what a task trains on

# epoch means that only an equilibrium model (one with solver statistics) reports
_SOLVER_WORDS = ("nfe", "resid", "converged", "jacob")


@dataclass
class TrainState:
    """What a checkpoint restores: where training stands, finished epochs and partial sums."""

    progress: Progress = field(default_factory=Progress)
    history: list[dict[str, Any]] = field(default_factory=list)
    meter: Meter = field(default_factory=Meter)


@dataclass
class Outcome:
    """How `EpochLoop.run` ended: "finished" or "interrupted" (by which signal)."""

    status: str
    state: TrainState
    signal: str | None = None


def solve_parts(record: dict[str, Any], evaluated: str) -> list[str]:
    """The epoch line's solver parts: forward / backward NFE of the training steps and the
    forward NFE of the evaluation whose keys start with `evaluated`, then the training solves'
    mean residual and (with an implicit backward) the adjoint's; none for a model without
    solves."""
    if record.get("train_forward_nfe") is None:
        return []
    return [
        f"nfe {record['train_forward_nfe']:.1f}/{record['train_backward_nfe']:.1f} "
        f"({evaluated} {record[f'{evaluated}_forward_nfe']:.1f})",
        f"res {record['train_residual']:.1e}",
        *adjoint_parts(record),
    ]


def solver_means(model: nn.Module, means: dict[str, float]) -> dict[str, float]:
    """`means` without the solver statistics when `model` runs no solver (an explicit model)."""
    if getattr(model, "stats", None) is not None:
        return means
    return {k: v for k, v in means.items() if not any(word in k for word in _SOLVER_WORDS)}


class EpochLoop(Generic[DataT]):
    """Trains `model` on `data` for `config.optim.epochs` epochs as `config` says, writing the
    checkpoint and `metrics.jsonl` to `out` after every epoch (and on a requested stop).

    Args:
        model: the model (the loop moves it to the runtime's device).
        checkpoint: the contents of a checkpoint to resume from (see `load_checkpoint`).
        on_step: called with the global step number after every step (for tests and tools).
        log: where rank 0's one-line epoch summaries go.

    Step k seeds torch with `_seed(k)`, so a run resumed from its checkpoint continues exactly
    as one that never stopped.
    """

    # what a checkpoint that does not fit is said not to fit
    restore_mismatch = "the run its config describes"

    def __init__(
        self,
        config: Config,
        data: DataT,
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
        self.steps_per_epoch = self._count_steps()
        self.optimizer = build_optimizer(config.optim, self.model.parameters())
        self.scheduler = build_scheduler(self.optimizer, config.optim, self.steps_per_epoch)
        self.state = self._new_state()
        self.on_step = on_step
        self.log = log if runtime.is_main else (lambda line: None)
        self._prepare()
        if checkpoint is not None:
            self._restore(checkpoint)

    @property
    def checkpoint_path(self) -> Path:
        return self.out / FILENAME

    # --- what a task supplies -----------------------------------------------------------

    def _count_steps(self) -> int:
        """Training steps per epoch."""
        raise NotImplementedError

    def _prepare(self) -> None:
        """Set up what the task's steps need, before a checkpoint is restored."""

    def _new_state(self, checkpoint: dict | None = None) -> TrainState:
        """A fresh state, or (with `checkpoint`) the one the checkpoint holds."""
        if checkpoint is None:
            return TrainState()
        meter = Meter(**checkpoint["meter"]) if self.runtime.is_main else Meter()
        history = [dict(row) for row in checkpoint["history"]]
        return TrainState(checkpoint["progress"], history, meter)

    def _fresh_meters(self) -> None:
        """Start the partial sums of a new epoch."""
        self.state.meter = Meter()

    def _epoch_batches(self) -> Sequence[Any]:
        """This process's batches of the current epoch, one per step (all of them)."""
        raise NotImplementedError

    def _seed(self, step: int) -> int:
        """The torch seed of global step `step` on this process."""
        return step_seed(self.config.run.seed, step, self.runtime.rank)

    def _step(self, batch: Any) -> dict[str, float]:
        """Train on `batch`; the sums to add to the epoch's meter."""
        raise NotImplementedError

    def _epoch_fields(self) -> dict[str, Any]:
        """The record of the epoch just trained, between its lr and its times (evaluation
        goes here: it counts in the epoch's time)."""
        raise NotImplementedError

    def _checkpoint_extras(self) -> dict[str, Any]:
        """Checkpoint entries beyond the ones every run stores."""
        return {}

    def _epoch_parts(self, record: dict[str, Any]) -> list[str]:
        """What the line about a finished epoch says between its number and its time."""
        raise NotImplementedError

    # --- the shared skeleton ------------------------------------------------------------

    def _restore(self, checkpoint: dict) -> None:
        """Load the optimizer, schedule and state of `checkpoint` (the model is the caller's)."""
        try:
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            self.scheduler.load_state_dict(checkpoint["scheduler"])
            self.state = self._new_state(checkpoint)
        except (ValueError, KeyError, TypeError, RuntimeError) as error:
            raise CheckpointError(
                f"the optimizer, schedule or metrics in {self.checkpoint_path} do not fit "
                f"{self.restore_mismatch}: {error}"
            ) from None

    def save(self) -> None:
        """Write the checkpoint (rank 0), with the partial sums of every process."""
        meter = self.state.meter.reduced(self.runtime)
        if self.runtime.is_main:
            save_checkpoint(
                self.checkpoint_path,
                config=self.config.to_dict(),
                model=self.model.state_dict(),
                optimizer=self.optimizer.state_dict(),
                scheduler=self.scheduler.state_dict(),
                progress=self.state.progress,
                history=self.state.history,
                meter=meter.state(),
                **self._checkpoint_extras(),
            )
        self.runtime.barrier()

    def run(self) -> Outcome:
        """Train until `config.optim.epochs` epochs are done or a stop is requested."""
        progress = self.state.progress
        with StopRequest() as stop:
            while progress.epoch < self.config.optim.epochs:
                started = time.perf_counter()
                if self._epoch(stop):
                    progress.train_seconds += time.perf_counter() - started
                    self.save()
                    return Outcome("interrupted", self.state, stop.signal_name or "SIGINT")
                self._finish_epoch(started)
                if self.runtime.any(stop.requested):
                    return Outcome("interrupted", self.state, stop.signal_name or "SIGINT")
        progress.finished = True
        self.save()
        return Outcome("finished", self.state)

    def _epoch(self, stop: StopRequest) -> bool:
        """Run the rest of the current epoch; True when stopped early on request."""
        progress, config = self.state.progress, self.config
        batches = self._epoch_batches()
        bar = ProgressBar(
            len(batches),
            initial=progress.step_in_epoch,
            description=f"epoch {progress.epoch + 1}/{config.optim.epochs}",
            enabled=config.run.progress and self.runtime.is_main,
        )
        with bar:
            for batch in batches[progress.step_in_epoch :]:
                torch.manual_seed(self._seed(progress.global_step))
                # penalty draws and iteration caps: the same on every process
                with shared_draws(step_seed(config.run.seed, progress.global_step)):
                    self.state.meter.add(**self._step(batch))
                progress.step_in_epoch += 1
                progress.global_step += 1
                bar.update(self.state.meter)
                if self.on_step is not None:
                    self.on_step(progress.global_step)
                if self.runtime.any(stop.requested):
                    return True
        return False

    def _finish_epoch(self, started: float) -> None:
        """Record the epoch, write the checkpoint and the metrics file, log one line.

        The epoch's time (`started` is its `perf_counter` start) includes its evaluation."""
        progress = self.state.progress
        lr = self.scheduler.get_last_lr()[0]
        fields = self._epoch_fields()
        seconds = time.perf_counter() - started
        progress.train_seconds += seconds
        progress.epoch += 1
        progress.step_in_epoch = 0
        record = {
            "epoch": progress.epoch,
            "step": progress.global_step,
            "lr": lr,
            **fields,
            "epoch_seconds": seconds,
            "train_seconds": progress.train_seconds,
        }
        warnings = epoch_warnings(record, self.config.deq.residual_warning)
        if warnings:
            record["warning"] = "; ".join(warnings)
        self.state.history.append(record)
        self._fresh_meters()
        self.save()
        if self.runtime.is_main:
            write_jsonl(self.out / "metrics.jsonl", self.state.history)
        self.log(self._describe(record))

    def _describe(self, record: dict[str, Any]) -> str:
        """One line about a finished epoch: its number, the task's parts, the time so far."""
        parts = [
            f"epoch {record['epoch']}/{self.config.optim.epochs}",
            *self._epoch_parts(record),
            f"{record['train_seconds']:.1f} s",
        ]
        if record.get("warning"):
            parts.append(f"WARNING: {record['warning']}")
        return "  ".join(parts)
