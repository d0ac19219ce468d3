"""The language-model training loop: epochs of random windows, validation, checkpoints.

An epoch is `lm.steps_per_epoch` steps; step k draws its `data.batch_size` windows from a
generator seeded by (run.seed, k), so a resumed run sees exactly the windows (and dropout
masks) that an uninterrupted one would.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from ..data.text import TextData
from ..training.checkpoint import CheckpointError, restore_model
from ..training.loop import EpochLoop, solve_parts, solver_means
from ..training.sampling import step_seed
from .engine import LN2, evaluate, train_step


class LMTrainer(EpochLoop[TextData]):
    """Trains a language model on `data` as `config` says, writing checkpoint and metrics to
    `out`; `checkpoint` (the contents of `load_checkpoint`) resumes a run (arguments as for
    `EpochLoop`)."""

    def _count_steps(self) -> int:
        return self.config.lm.steps_per_epoch

    def _prepare(self) -> None:
        self.step_seconds = 0.0  # time inside training steps (this session), for tokens/s
        self.step_tokens = 0

    def _restore(self, checkpoint: dict) -> None:
        source = str(self.checkpoint_path)
        stored = checkpoint.get("data", {}).get("vocab")
        if stored != self.data.vocab.chars:
            raise CheckpointError(
                f"the text of this run has another vocabulary than the one in {source}; "
                "resume with the same lm.text"
            )
        restore_model(self.model, checkpoint["model"], source)
        super()._restore(checkpoint)

    def _checkpoint_extras(self) -> dict[str, Any]:
        return {"data": {"name": self.data.name, "vocab": self.data.vocab.chars}, "world_size": 1}

    def _epoch_batches(self) -> range:
        """Step k of an epoch draws its windows from the global step number."""
        return range(self.steps_per_epoch)

    def _seed(self, step: int) -> int:
        # stream 1: the windows' generator takes stream 0 of the same step
        return step_seed(self.config.run.seed, step, 1)

    def _windows(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        lm, device = self.config.lm, self.runtime.device
        length = lm.seq_len + lm.memory
        generator = torch.Generator().manual_seed(step_seed(self.config.run.seed, step))
        starts = self.data.random_starts(self.config.data.batch_size, length, generator)
        inputs, targets = self.data.windows(self.data.train, starts, length)
        return inputs.to(device), targets.to(device)

    def _step(self, batch: int) -> dict[str, float]:
        config = self.config
        inputs, targets = self._windows(self.state.progress.global_step)
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
        return sums

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

    def _epoch_fields(self) -> dict[str, Any]:
        """The epoch's training means (and bits per character) and its validation."""
        means = solver_means(self.model, self.state.meter.means())
        val = self.validate()
        return {
            **means,
            "train_bpc": means["train_loss"] / LN2,
            **{f"val_{k}": v for k, v in val.items()},
        }

    def _epoch_parts(self, record: dict[str, Any]) -> list[str]:
        parts = [
            f"train {record['train_bpc']:.3f} bpc",
            f"val {record['val_bpc']:.3f} bpc",
            f"val accuracy {100 * record['val_accuracy']:.1f}%",
        ]
        return parts + solve_parts(record, "val")
