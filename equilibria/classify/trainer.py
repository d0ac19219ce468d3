"""The image-classification training loop: epochs of augmented batches, per-epoch test
evaluation and checkpoints, stop on request (the skeleton is `EpochLoop`)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..data import ImageData, random_flip, random_shift
from ..training.averaging import WeightAverage
from ..training.checkpoint import CheckpointError, restore_model
from ..training.loop import EpochLoop, Outcome, StepHook, TrainState, solve_parts, solver_means
from ..training.reuse import FixedPointStore
from ..training.sampling import steps_per_epoch, train_batches
from .engine import evaluate, train_step
from .setup import image_record

__all__ = ["Outcome", "StepHook", "TrainState", "Trainer"]


class Trainer(EpochLoop[ImageData]):
    """Trains an image classifier on `data` as `config` says, writing the checkpoint and metrics
    to `out` (arguments as for `EpochLoop`); on several processes the model runs wrapped in
    DistributedDataParallel (`network`)."""

    def _count_steps(self) -> int:
        return steps_per_epoch(len(self.data.train), self.config.data.batch_size)

    def _prepare(self) -> None:
        runtime, data = self.runtime, self.data
        decay = self.config.optim.average
        self.average = WeightAverage(self.model, decay) if decay > 0 else None
        # restoring a checkpoint later copies into the same (wrapped) parameters
        self.network: nn.Module = self.model
        if runtime.distributed:
            device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
            self.network = DistributedDataParallel(self.model, device_ids=device_ids)
        self.fill = data.black(runtime.device)
        self.fixed_points = (
            FixedPointStore(len(data.train), runtime.device) if self.config.deq.reuse else None
        )

    @property
    def tested_model(self) -> nn.Module:
        """The weights that are evaluated: the moving average when there is one."""
        return self.average.model if self.average is not None else self.model

    def _restore(self, checkpoint: dict) -> None:
        source = str(self.checkpoint_path)
        restore_model(self.model, checkpoint["model"], source)
        if self.average is not None:
            if checkpoint.get("average") is None:
                raise CheckpointError(f"{source} holds no weight average")
            restore_model(self.average.model, checkpoint["average"], source)
        super()._restore(checkpoint)

    def _checkpoint_extras(self) -> dict[str, Any]:
        return {
            "average": None if self.average is None else self.average.state_dict(),
            "data": image_record(self.data),
            "world_size": self.runtime.world_size,
        }

    def _epoch_batches(self) -> list[torch.Tensor]:
        config, runtime = self.config, self.runtime
        return train_batches(
            len(self.data.train),
            config.data.batch_size,
            config.run.seed,
            self.state.progress.epoch,
            runtime.rank,
            runtime.world_size,
        )

    def _batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        split, data = self.data.train, self.config.data
        x = self.data.inputs(split.images[indices], self.runtime.device)
        x = random_shift(x, data.shift, self.fill)
        if data.flip:
            x = random_flip(x)
        return x, split.labels[indices].to(self.runtime.device)

    def _step(self, indices: torch.Tensor) -> dict[str, float]:
        config = self.config
        x, y = self._batch(indices)
        start = None
        if self.fixed_points is not None:
            start = self.fixed_points.start(indices, self.runtime.device)
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
            solve=None if start is None else {"z0": start},
        )
        stats = getattr(self.model, "stats", None)
        if self.fixed_points is not None and stats is not None and not stats.pretraining:
            self.fixed_points.keep(indices, stats.forward.z)
        if self.average is not None:
            self.average.update(self.model)
        return sums

    def _epoch_fields(self) -> dict[str, Any]:
        """The epoch's training means and its test evaluation."""
        means = self.state.meter.reduced(self.runtime).means()
        test = evaluate(
            self.tested_model,
            self.data,
            self.data.test,
            self.runtime,
            batch_size=self.config.data.eval_batch_size,
            precision=self.config.run.precision,
        )
        return {**solver_means(self.model, means), **{f"test_{k}": v for k, v in test.items()}}

    def _epoch_parts(self, record: dict[str, Any]) -> list[str]:
        parts = [
            f"loss {record['train_loss']:.4f}",
            f"train {100 * record['train_accuracy']:.2f}%",
            f"test {100 * record['test_accuracy']:.2f}%",
        ]
        return parts + solve_parts(record, "test")
