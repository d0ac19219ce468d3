"""The puzzle training loop: epochs of `puzzles.steps_per_epoch` random batches of training
puzzles, each epoch ending with a test at the training difficulty (the skeleton is `EpochLoop`).

Step k draws its batch from a generator seeded by (run.seed, k), so a resumed run sees exactly
the batches (and random starts) that an uninterrupted one would.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..training.checkpoint import restore_model
from ..training.loop import EpochLoop, solve_parts, solver_means
from ..training.metrics import solve_sums
from ..training.sampling import step_seed
from ..training.step import autocast, penalized, update
from .evaluate import evaluate
from .setup import PuzzleData, to_device

# puzzles of the epoch's test (the first of the training difficulty's test set)
EPOCH_TEST_PUZZLES = 100


class PuzzleTrainer(EpochLoop[PuzzleData]):
    """Trains a puzzle network on `data` as `config` says (arguments as for `EpochLoop`)."""

    restore_mismatch = "this puzzle run"

    def _count_steps(self) -> int:
        return self.config.puzzles.steps_per_epoch or self.data.spec.steps_per_epoch

    def _restore(self, checkpoint: dict) -> None:
        restore_model(self.model, checkpoint["model"], str(self.checkpoint_path))
        super()._restore(checkpoint)

    def _checkpoint_extras(self) -> dict[str, Any]:
        sizes = self.data.sizes
        return {"data": {"family": self.data.family.name, "train_size": sizes.train}}

    def _epoch_batches(self) -> range:
        return range(self.steps_per_epoch)

    def _seed(self, step: int) -> int:
        # stream 1: the batch's own generator takes stream 0 of the same step
        return step_seed(self.config.run.seed, step, 1)

    def _batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(step_seed(self.config.run.seed, step))
        count = len(self.data.train)
        indices = torch.randint(count, (self.config.data.batch_size,), generator=generator)
        return to_device(self.data.train.subset(indices), self.runtime.device)

    def _step(self, batch: int) -> dict[str, float]:
        config, model, spec = self.config, self.model, self.data.spec
        inputs, targets = self._batch(self.state.progress.global_step)
        model.train()
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(inputs.device, config.run.precision):
            logits = model(inputs)
        logits = logits.float()
        loss = F.cross_entropy(
            logits, spec.loss_targets(targets), label_smoothing=config.optim.label_smoothing
        )
        stats = model.stats
        total = penalized(loss, stats)
        if config.puzzles.early_loss > 0 and stats is not None:
            total = total + config.puzzles.early_loss * self._early_loss(inputs, targets)
        update(
            total,
            model,
            self.optimizer,
            self.scheduler,
            grad_clip=config.optim.grad_clip,
        )
        solved = self.data.family.exact_match(spec.decode(logits.detach()), targets)
        count = len(targets)
        sums = {
            "loss": float(loss.detach()) * count,
            "correct": float(solved.sum()),
            "samples": count,
            "steps": 1,
        }
        if stats is not None:
            sums.update(solve_sums(stats))
        return sums

    def _early_loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The loss at the state of a random iteration before the training cap."""
        cap = self.model.deq.train_settings.max_iter
        iterations = int(torch.randint(1, max(cap, 2), ()))
        logits = self.model.early_logits(inputs, iterations).float()
        return F.cross_entropy(logits, self.data.spec.loss_targets(targets))

    def _epoch_fields(self) -> dict[str, Any]:
        """The epoch's training means and a test at the training difficulty."""
        means = solver_means(self.model, self.state.meter.means())
        size = self.data.sizes.train
        tests = self.data.tests.get(size)
        if tests is None:  # the training size is not among the test sizes
            tests = self.data.train
        puzzles = tests.subset(range(min(len(tests), EPOCH_TEST_PUZZLES)))
        row = evaluate(self.model, self.data, puzzles, self.config, self.runtime.device)
        return {**means, **{f"test_{k}": v for k, v in row.items()}}

    def _epoch_parts(self, record: dict[str, Any]) -> list[str]:
        parts = [
            f"loss {record['train_loss']:.4f}",
            f"train solved {100 * record['train_accuracy']:.1f}%",
            f"test solved {100 * record['test_accuracy']:.1f}%",
        ]
        return parts + solve_parts(record, "test")
