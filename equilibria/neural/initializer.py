"""A small network that predicts a DEQ's initial state from its input."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import StateMismatchError


class _PartHead(nn.Module):
    """Maps the input to one state part: pooled to the part's grid, then a 1x1 mixing layer."""

    def __init__(self, x_shape: torch.Size, part_shape: torch.Size) -> None:
        super().__init__()
        self.part_shape = tuple(part_shape)
        if len(x_shape) != len(part_shape) or len(x_shape) not in (1, 2, 3):
            raise StateMismatchError(
                f"the initializer maps inputs of per-sample shape {tuple(x_shape)} to states with "
                f"the same number of dimensions (features; sequence x features; channels x height "
                f"x width); cannot map to a state part of shape {tuple(part_shape)}"
            )
        if len(x_shape) == 2 and x_shape[0] != part_shape[0]:
            raise StateMismatchError(
                f"sequence input of length {x_shape[0]} cannot initialize a state of length "
                f"{part_shape[0]}"
            )
        in_features = x_shape[0] if len(x_shape) == 3 else x_shape[-1]
        out_features = part_shape[0] if len(part_shape) == 3 else part_shape[-1]
        self.mix = nn.Linear(in_features, out_features)
        with torch.no_grad():  # start close to the zero initial state
            self.mix.weight.mul_(0.1)
            self.mix.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:  # (batch, channels, height, width): pool to the part's grid
            pooled = F.adaptive_avg_pool2d(x, self.part_shape[1:])
            return self.mix(pooled.movedim(1, -1)).movedim(-1, 1)
        return self.mix(x)


class Initializer(nn.Module):
    """Predicts z0 from the DEQ input x: one cheap head per state part.

    Each head pools x to the part's spatial grid (images) and mixes channels with a 1x1 linear
    layer, so its size is (input channels + 1) x (part channels): a tiny fraction of a model.

    Args:
        x_shape: per-sample shape of the DEQ input (no batch dimension).
        state_shapes: per-sample shapes of the state's parts.
        structure: "tensor", "tuple" or "list", the structure of the state to return.
    """

    def __init__(
        self, x_shape: Sequence[int], state_shapes: Sequence[Sequence[int]], structure: str
    ) -> None:
        super().__init__()
        self.x_shape = tuple(x_shape)
        self.state_shapes = [tuple(s) for s in state_shapes]
        self.structure = structure
        self.heads = nn.ModuleList(
            _PartHead(torch.Size(x_shape), torch.Size(s)) for s in self.state_shapes
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple | list:
        if tuple(x.shape[1:]) != self.x_shape:
            raise StateMismatchError(
                f"this initializer was built for inputs of per-sample shape {self.x_shape}, "
                f"got {tuple(x.shape[1:])}"
            )
        parts = [head(x) for head in self.heads]
        if self.structure == "tensor":
            return parts[0]
        return tuple(parts) if self.structure == "tuple" else parts
