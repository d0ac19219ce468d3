"""The contrastive training loop: epochs of two-view steps, probes, checkpoints, stop on request.

Each step's views and dropout masks come from `step_seed(seed, step)`, and the batches from
`train_batches(seed, epoch)`, so a run resumed from its checkpoint continues exactly as one that
never stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import Config
from ..data import ImageData
from ..training.checkpoint import (
    FILENAME,
    CheckpointError,
    Progress,
    restore_model,
    save_checkpoint,
)
from ..training.distributed import Runtime
from ..training.interrupt import StopRequest
from ..training.metrics import Meter, write_jsonl
from ..training.optim import build_optimizer, build_scheduler
from ..training.progress import ProgressBar
from ..training.sampling import step_seed, steps_per_epoch, train_batches
from .augment import ViewAugment
from .engine import contrastive_step
from .model import ContrastiveModel
from .probe import probe_backbone

StepHook = Callable[[int], None]


@dataclass
class SSLState:
    """What a checkpoint restores: progress, finished epochs, the partial sums of the epoch in
    progress (`meter`: loss, first view; `second`: the second view's solves) and the probe of
    the backbone at initialisation."""

    progress: Progress = field(default_factory=Progress)
    history: list[dict[str, Any]] = field(default_factory=list)
    meter: Meter = field(default_factory=Meter)
    second: Meter = field(default_factory=Meter)
    init_probe: dict[str, Any] | None = None


class ContrastiveTrainer:
    """Trains `model` on the images of `data` (labels unused) as `config` says, in `out`."""

    def __init__(
        self,
        config: Config,
        data: ImageData,
        model: ContrastiveModel,
        runtime: Runtime,
        out: Path,
        *,
        checkpoint: dict | None = None,
        on_step: StepHook | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        self.config, self.data, self.runtime, self.out = config, data, runtime, Path(out)
        self.model = model.to(runtime.device)
        self.steps_per_epoch = steps_per_epoch(len(data.train), config.data.batch_size)
        self.optimizer = build_optimizer(config.optim, self.model.parameters())
        self.scheduler = build_scheduler(self.optimizer, config.optim, self.steps_per_epoch)
        self.augment = ViewAugment.from_config(config.ssl)
        black = [(0.0 - m) / s for m, s in zip(data.mean, data.std, strict=True)]
        self.fill = torch.tensor(black, device=runtime.device)
        self.state = SSLState()
        if checkpoint is not None:
            self._restore(checkpoint)
        self.on_step = on_step
        self.log = log

    @property
    def checkpoint_path(self) -> Path:
        return self.out / FILENAME

    def probe(self) -> dict[str, Any]:
        """The linear probe of the backbone as it is now."""
        s = self.config.ssl
        return probe_backbone(
            self.model.backbone,
            self.data,
            self.runtime.device,
            l2=s.probe_l2,
            iters=s.probe_iters,
            batch_size=self.config.data.eval_batch_size,
        )

    def _restore(self, checkpoint: dict) -> None:
        source = str(self.checkpoint_path)
        restore_model(self.model, checkpoint["model"], source)
        try:
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            self.scheduler.load_state_dict(checkpoint["scheduler"])
            self.state = SSLState(
                checkpoint["progress"],
                [dict(row) for row in checkpoint["history"]],
                Meter(**checkpoint["meter"]),
                Meter(**checkpoint["second"]),
                checkpoint.get("init_probe"),
            )
        except (ValueError, KeyError, TypeError, RuntimeError) as error:
            raise CheckpointError(
                f"the optimizer, schedule or metrics in {source} do not fit a contrastive run of "
                f"the config it holds: {error}"
            ) from None

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
            second=self.state.second.state(),
            init_probe=self.state.init_probe,
            task="ssl",
        )

    def run(self) -> str:
        """Train until `config.optim.epochs` epochs are done ("finished") or a stop is
        requested ("interrupted", after saving)."""
        progress = self.state.progress
        if self.config.ssl.probe_init and self.state.init_probe is None:
            self.state.init_probe = self.probe()
            self.log(
                f"linear probe of the backbone at initialisation: test "
                f"{100 * self.state.init_probe['test_accuracy']:.2f}%"
            )
        with StopRequest() as stop:
            while progress.epoch < self.config.optim.epochs:
                started = time.perf_counter()
                if self._epoch(stop):
                    progress.train_seconds += time.perf_counter() - started
                    self.save()
                    return "interrupted"
                self._finish_epoch(started)
                if stop.requested:
                    return "interrupted"
        progress.finished = True
        self.save()
        return "finished"

    def _epoch(self, stop: StopRequest) -> bool:
        """Run the rest of the current epoch; True when stopped early on request."""
        progress, config = self.state.progress, self.config
        batches = train_batches(
            len(self.data.train), config.data.batch_size, config.run.seed, progress.epoch
        )
        bar = ProgressBar(
            len(batches),
            initial=progress.step_in_epoch,
            description=f"epoch {progress.epoch + 1}/{config.optim.epochs}",
            enabled=config.run.progress,
        )
        with bar:
            for indices in batches[progress.step_in_epoch :]:
                seed = step_seed(config.run.seed, progress.global_step)
                torch.manual_seed(seed)
                x = self.data.inputs(self.data.train.images[indices], self.runtime.device)
                sums, second = contrastive_step(
                    self.model,
                    x,
                    self.augment,
                    torch.Generator().manual_seed(seed),
                    self.optimizer,
                    self.scheduler,
                    temperature=config.ssl.temperature,
                    fill=self.fill,
                    precision=config.run.precision,
                    grad_clip=config.optim.grad_clip,
                )
                self.state.meter.add(**sums)
                self.state.second.add(**second)
                progress.step_in_epoch += 1
                progress.global_step += 1
                bar.update(self.state.meter)
                if self.on_step is not None:
                    self.on_step(progress.global_step)
                if stop.requested:
                    return True
        return False

    def _finish_epoch(self, started: float) -> None:
        """Record the epoch (with a probe when due), write the metrics file and checkpoint."""
        progress, config = self.state.progress, self.config
        record: dict[str, Any] = {
            "epoch": progress.epoch + 1,
            "step": progress.global_step,
            "lr": self.scheduler.get_last_lr()[0],
        }
        means = self.state.meter.means()
        record["train_loss"] = means["train_loss"]
        record["train_contrastive_accuracy"] = means["train_accuracy"]
        if self.model.is_equilibrium:
            second = self.state.second.means()
            record.update(
                first_forward_nfe=means["train_forward_nfe"],
                second_forward_nfe=second["train_forward_nfe"],
                first_residual=means["train_residual"],
                second_residual=second["train_residual"],
                first_converged=means["train_converged"],
                second_converged=second["train_converged"],
                train_backward_nfe=means["train_backward_nfe"],
            )
        every = config.ssl.probe_every
        if every and (progress.epoch + 1) % every == 0 and progress.epoch + 1 < config.optim.epochs:
            record["probe_test_accuracy"] = self.probe()["test_accuracy"]
        seconds = time.perf_counter() - started
        progress.train_seconds += seconds
        progress.epoch += 1
        progress.step_in_epoch = 0
        record.update(epoch_seconds=seconds, train_seconds=progress.train_seconds)
        self.state.history.append(record)
        self.state.meter, self.state.second = Meter(), Meter()
        self.save()
        write_jsonl(self.out / "metrics.jsonl", self.state.history)
        self.log(describe_epoch(record, config.optim.epochs))


def describe_epoch(record: dict[str, Any], epochs: int) -> str:
    """One line about a finished epoch."""
    parts = [
        f"epoch {record['epoch']}/{epochs}",
        f"loss {record['train_loss']:.4f}",
        f"pairs found {100 * record['train_contrastive_accuracy']:.1f}%",
    ]
    if "first_forward_nfe" in record:
        parts.append(
            f"nfe view 1/2 {record['first_forward_nfe']:.1f}/{record['second_forward_nfe']:.1f}"
        )
        parts.append(f"res view 1/2 {record['first_residual']:.1e}/{record['second_residual']:.1e}")
    if "probe_test_accuracy" in record:
        parts.append(f"probe {100 * record['probe_test_accuracy']:.2f}%")
    parts.append(f"{record['train_seconds']:.1f} s")
    return "  ".join(parts)
