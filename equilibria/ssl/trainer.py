"""The contrastive training loop: epochs of two-view steps, probes, checkpoints, stop on request.

Each step's views and dropout masks come from `step_seed(seed, step)`, and the batches from
`train_batches(seed, epoch)`, so a run resumed from its checkpoint continues exactly as one that
never stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..classify.setup import image_record
from ..data import ImageData
from ..training.checkpoint import restore_model
from ..training.equilibrium import adjoint_parts
from ..training.loop import EpochLoop, Outcome, StepHook, TrainState
from ..training.metrics import Meter
from ..training.sampling import steps_per_epoch, train_batches
from .augment import ViewAugment
from .engine import contrastive_step
from .model import ContrastiveModel
from .probe import probe_backbone

__all__ = ["ContrastiveTrainer", "SSLState", "StepHook"]


@dataclass
class SSLState(TrainState):
    """What a checkpoint restores: progress, finished epochs, the partial sums of the epoch in
    progress (`meter`: loss, first view; `second`: the second view's solves) and the probe of
    the backbone at initialisation."""

    second: Meter = field(default_factory=Meter)
    init_probe: dict[str, Any] | None = None


class ContrastiveTrainer(EpochLoop[ImageData]):
    """Trains a `ContrastiveModel` on the images of `data` (labels unused) as `config` says, in
    `out` (arguments as for `EpochLoop`)."""

    restore_mismatch = "a contrastive run of the config it holds"
    model: ContrastiveModel
    state: SSLState

    def _count_steps(self) -> int:
        return steps_per_epoch(len(self.data.train), self.config.data.batch_size)

    def _prepare(self) -> None:
        self.augment = ViewAugment.from_config(self.config.ssl)
        self.fill = self.data.black(self.runtime.device)

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
        restore_model(self.model, checkpoint["model"], str(self.checkpoint_path))
        super()._restore(checkpoint)

    def _new_state(self, checkpoint: dict | None = None) -> SSLState:
        if checkpoint is None:
            return SSLState()
        return SSLState(
            checkpoint["progress"],
            [dict(row) for row in checkpoint["history"]],
            Meter(**checkpoint["meter"]),
            Meter(**checkpoint["second"]),
            checkpoint.get("init_probe"),
        )

    def _fresh_meters(self) -> None:
        self.state.meter, self.state.second = Meter(), Meter()

    def _checkpoint_extras(self) -> dict[str, Any]:
        return {
            "second": self.state.second.state(),
            "init_probe": self.state.init_probe,
            "task": "ssl",
            "data": image_record(self.data),
        }

    def run(self) -> Outcome:
        """Probe the backbone at initialisation when asked (once), then train until
        `config.optim.epochs` epochs are done or a stop is requested (after saving)."""
        if self.config.ssl.probe_init and self.state.init_probe is None:
            self.state.init_probe = self.probe()
            self.log(
                f"linear probe of the backbone at initialisation: test "
                f"{100 * self.state.init_probe['test_accuracy']:.2f}%"
            )
        return super().run()

    def _epoch_batches(self) -> list[torch.Tensor]:
        config = self.config
        return train_batches(
            len(self.data.train), config.data.batch_size, config.run.seed, self.state.progress.epoch
        )

    def _step(self, indices: torch.Tensor) -> dict[str, float]:
        config = self.config
        seed = self._seed(self.state.progress.global_step)  # torch is seeded with it already
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
        self.state.second.add(**second)
        return sums

    def _epoch_fields(self) -> dict[str, Any]:
        """The epoch's loss and pair accuracy, both views' solves, and a probe when due."""
        config, epoch = self.config, self.state.progress.epoch + 1
        means = self.state.meter.means()
        fields: dict[str, Any] = {
            "train_loss": means["train_loss"],
            "train_contrastive_accuracy": means["train_accuracy"],
        }
        if self.model.is_equilibrium:
            second = self.state.second.means()
            fields.update(
                first_forward_nfe=means["train_forward_nfe"],
                second_forward_nfe=second["train_forward_nfe"],
                first_residual=means["train_residual"],
                second_residual=second["train_residual"],
                first_converged=means["train_converged"],
                second_converged=second["train_converged"],
                train_backward_nfe=means["train_backward_nfe"],
                train_adjoint_residual=means["train_adjoint_residual"],
                train_adjoint_converged=means["train_adjoint_converged"],
            )
        every = config.ssl.probe_every
        if every and epoch % every == 0 and epoch < config.optim.epochs:
            fields["probe_test_accuracy"] = self.probe()["test_accuracy"]
        return fields

    def _epoch_parts(self, record: dict[str, Any]) -> list[str]:
        parts = [
            f"loss {record['train_loss']:.4f}",
            f"pairs found {100 * record['train_contrastive_accuracy']:.1f}%",
        ]
        if "first_forward_nfe" in record:
            parts.append(
                f"nfe view 1/2 {record['first_forward_nfe']:.1f}/{record['second_forward_nfe']:.1f}"
            )
            parts.append(
                f"res view 1/2 {record['first_residual']:.1e}/{record['second_residual']:.1e}"
            )
            parts.extend(adjoint_parts(record))
        if "probe_test_accuracy" in record:
            parts.append(f"probe {100 * record['probe_test_accuracy']:.2f}%")
        return parts
