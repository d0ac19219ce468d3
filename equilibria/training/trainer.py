"""The training loop: epochs of steps, per-epoch evaluation and checkpoints, stop on request."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..config import Config
from ..data import ImageData, random_flip, random_shift
from ..stability import shared_draws
from .averaging import WeightAverage
from .checkpoint import FILENAME, CheckpointError, Progress, restore_model, save_checkpoint
from .distributed import Runtime
from .engine import evaluate, train_step
from .interrupt import StopRequest
from .metrics import Meter, write_jsonl
from .optim import build_optimizer, build_scheduler
from .progress import ProgressBar
from .sampling import step_seed, steps_per_epoch, train_batches

StepHook = Callable[[int], None]


@dataclass
class TrainState:
    """What a checkpoint restores: where training stands, finished epochs and partial sums."""

    progress: Progress = field(default_factory=Progress)
    history: list[dict[str, Any]] = field(default_factory=list)
    meter: Meter = field(default_factory=Meter)


@dataclass
class Outcome:
    """How `Trainer.run` ended: "finished" or "interrupted" (by which signal)."""

    status: str
    state: TrainState
    signal: str | None = None


class Trainer:
    """Trains `model` on `data` as `config` says, writing the checkpoint and metrics to `out`.

    Args:
        model: the model (not wrapped; the trainer wraps it for DistributedDataParallel).
        checkpoint: the contents of a checkpoint to resume from (see `load_checkpoint`).
        on_step: called with the global step number after every step (for tests and tools).
        log: where rank 0's one-line epoch summaries go.
    """

    def __init__(
        self,
        config: Config,
        data: ImageData,
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
        self.network: nn.Module = self.model
        self.steps_per_epoch = steps_per_epoch(len(data.train), config.data.batch_size)
        self.optimizer = build_optimizer(config.optim, self.model.parameters())
        self.scheduler = build_scheduler(self.optimizer, config.optim, self.steps_per_epoch)
        decay = config.optim.average
        self.average = WeightAverage(self.model, decay) if decay > 0 else None
        self.state = TrainState()
        if checkpoint is not None:
            self._restore(checkpoint)
        if runtime.distributed:
            device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
            self.network = DistributedDataParallel(self.model, device_ids=device_ids)
        self.on_step = on_step
        self.log = log if runtime.is_main else (lambda line: None)
        black = [(0.0 - m) / s for m, s in zip(data.mean, data.std, strict=True)]
        self.fill = torch.tensor(black, device=runtime.device)

    @property
    def tested_model(self) -> nn.Module:
        """The weights that are evaluated: the moving average when there is one."""
        return self.average.model if self.average is not None else self.model

    @property
    def checkpoint_path(self) -> Path:
        return self.out / FILENAME

    def _restore(self, checkpoint: dict) -> None:
        source = str(self.checkpoint_path)
        restore_model(self.model, checkpoint["model"], source)
        if self.average is not None:
            if checkpoint.get("average") is None:
                raise CheckpointError(f"{source} holds no weight average")
            restore_model(self.average.model, checkpoint["average"], source)
        try:
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            self.scheduler.load_state_dict(checkpoint["scheduler"])
            meter = Meter(**checkpoint["meter"]) if self.runtime.is_main else Meter()
            history = [dict(row) for row in checkpoint["history"]]
        except (ValueError, KeyError, TypeError, RuntimeError) as error:
            raise CheckpointError(
                f"the optimizer, schedule or metrics in {source} do not fit the run its config "
                f"describes: {error}"
            ) from None
        self.state = TrainState(checkpoint["progress"], history, meter)

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
                average=None if self.average is None else self.average.state_dict(),
                data={
                    "name": self.data.name,
                    "shape": list(self.data.shape),
                    "classes": self.data.classes,
                },
                world_size=self.runtime.world_size,
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

    def _batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        split, data = self.data.train, self.config.data
        x = self.data.inputs(split.images[indices], self.runtime.device)
        x = random_shift(x, data.shift, self.fill)
        if data.flip:
            x = random_flip(x)
        return x, split.labels[indices].to(self.runtime.device)

    def _epoch(self, stop: StopRequest) -> bool:
        """Run the rest of the current epoch; True when stopped early on request."""
        progress, config = self.state.progress, self.config
        batches = train_batches(
            len(self.data.train),
            config.data.batch_size,
            config.run.seed,
            progress.epoch,
            self.runtime.rank,
            self.runtime.world_size,
        )
        bar = ProgressBar(
            len(batches),
            initial=progress.step_in_epoch,
            description=f"epoch {progress.epoch + 1}/{config.optim.epochs}",
            enabled=config.run.progress and self.runtime.is_main,
        )
        with bar:
            for indices in batches[progress.step_in_epoch :]:
                torch.manual_seed(
                    step_seed(config.run.seed, progress.global_step, self.runtime.rank)
                )
                x, y = self._batch(indices)
                # penalty draws and iteration caps: the same on every process
                with shared_draws(step_seed(config.run.seed, progress.global_step)):
                    sums = train_step(
                        self.network,
                        self.model,
                        x,
                        y,
                        self.optimizer,
                        self.scheduler,
                        precision=config.run.precision,
                        label_smoothing=config.optim.label_smoothing,
                        grad_clip=config.optim.grad_clip,
                    )
                if self.average is not None:
                    self.average.update(self.model)
                self.state.meter.add(**sums)
                progress.step_in_epoch += 1
                progress.global_step += 1
                bar.update(self.state.meter)
                if self.on_step is not None:
                    self.on_step(progress.global_step)
                if self.runtime.any(stop.requested):
                    return True
        return False

    def _finish_epoch(self, started: float) -> None:
        """Evaluate, record the epoch's metrics, write the metrics file and the checkpoint.

        The epoch's time (`started` is its `perf_counter` start) includes this evaluation."""
        progress, config = self.state.progress, self.config
        means = self.state.meter.reduced(self.runtime).means()
        test = evaluate(
            self.tested_model,
            self.data,
            self.data.test,
            self.runtime,
            batch_size=config.data.eval_batch_size,
            precision=config.run.precision,
        )
        if getattr(self.model, "stats", None) is None:  # an explicit model runs no solver
            means = {k: v for k, v in means.items() if "nfe" not in k and "resid" not in k}
            means = {k: v for k, v in means.items() if "converged" not in k and "jacob" not in k}
        seconds = time.perf_counter() - started
        progress.train_seconds += seconds
        progress.epoch += 1
        progress.step_in_epoch = 0
        record = {
            "epoch": progress.epoch,
            "step": progress.global_step,
            "lr": self.scheduler.get_last_lr()[0],
            **means,
            **{f"test_{k}": v for k, v in test.items()},
            "epoch_seconds": seconds,
            "train_seconds": progress.train_seconds,
        }
        self.state.history.append(record)
        self.state.meter = Meter()
        self.save()
        if self.runtime.is_main:
            write_jsonl(self.out / "metrics.jsonl", self.state.history)
        self.log(describe_epoch(record, config.optim.epochs))


def describe_epoch(record: dict[str, Any], epochs: int) -> str:
    """One line about a finished epoch."""
    parts = [
        f"epoch {record['epoch']}/{epochs}",
        f"loss {record['train_loss']:.4f}",
        f"train {100 * record['train_accuracy']:.2f}%",
        f"test {100 * record['test_accuracy']:.2f}%",
    ]
    if record.get("train_forward_nfe") is not None:
        parts.append(
            f"nfe {record['train_forward_nfe']:.1f}/{record['train_backward_nfe']:.1f} "
            f"(test {record['test_forward_nfe']:.1f})"
        )
        parts.append(f"res {record['train_residual']:.1e}")
    parts.append(f"{record['train_seconds']:.1f} s")
    return "  ".join(parts)
