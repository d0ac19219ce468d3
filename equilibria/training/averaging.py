"""An exponential moving average of the weights, evaluated in place of the last iterate."""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn


class WeightAverage:
    """A copy of `model` whose parameters follow avg <- decay * avg + (1 - decay) * current
    after every optimizer step; buffers (such as a pretraining counter) are copied as they are.

    Averaging smooths the step-to-step noise of the last iterates, which on small test sets is
    worth a few test errors; `model` is what `evaluate` and checkpoints use for the average.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the averaging decay must lie in (0, 1), got {decay!r}")
        self.decay = decay
        self.model = copy.deepcopy(model)
        self.model.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for average, current in zip(self.model.parameters(), model.parameters(), strict=True):
            average.lerp_(current.detach(), 1.0 - self.decay)
        for average, current in zip(self.model.buffers(), model.buffers(), strict=True):
            average.copy_(current)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)
