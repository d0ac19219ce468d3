"""A small network that predicts a DEQ's initial state from its input."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import StateMismatchError, check_positive_int


class _PartHead(nn.Module):
    """Maps features to one state part: pooled to the part's grid, then a 1x1 mixing layer."""

    def __init__(self, x_shape: torch.Size, in_features: int, part_shape: torch.Size) -> None:
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
        out_features = part_shape[0] if len(part_shape) == 3 else part_shape[-1]
        self.mix = nn.Linear(in_features, out_features)
        with torch.no_grad():  # start close to the zero initial state
            self.mix.weight.mul_(0.1)
            self.mix.bias.zero_()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.dim() == 4:  # (batch, channels, height, width): pool to the part's grid
            pooled = F.adaptive_avg_pool2d(features, self.part_shape[1:])
            return self.mix(pooled.movedim(1, -1)).movedim(-1, 1)
        return self.mix(features)


class CausalConv(nn.Module):
    """A 1-d convolution over sequence positions that sees only the current and earlier ones:
    (batch, length, features) in, (batch, length, out_features) out, any length."""

    def __init__(self, in_features: int, out_features: int, kernel: int = 3) -> None:
        super().__init__()
        self.kernel = kernel
        self.conv = nn.Conv1d(in_features, out_features, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = F.pad(x.transpose(1, 2), (self.kernel - 1, 0))
        return self.conv(padded).transpose(1, 2)


class Initializer(nn.Module):
    """Predicts z0 from the DEQ input x: a shared hidden layer, then one cheap head per part.

    The hidden layer (`width` channels, then ReLU) sees each position's neighbourhood: a 3x3
    convolution for images, a causal convolution over the current and two earlier positions for
    sequences (so a causal model's initial guess never reads later positions), a linear layer
    for feature vectors. Each part's head pools [x, hidden] to the part's grid and mixes
    channels with a 1x1 linear layer. `width=0` drops the hidden layer (a linear map of the
    pooled input); `skip=False` lets the heads read the hidden features only, a bottleneck that
    keeps the initializer small when the input has many features (a language model's
    embeddings). Sequences may have any length; images must have the shape of `x_shape`.

    Args:
        x_shape: per-sample shape of the DEQ input (no batch dimension).
        state_shapes: per-sample shapes of the state's parts.
        structure: "tensor", "tuple" or "list", the structure of the state to return.
        width: channels of the hidden layer (0: none).
        skip: whether the heads also read the input itself (needs a hidden layer when False).
    """

    def __init__(
        self,
        x_shape: Sequence[int],
        state_shapes: Sequence[Sequence[int]],
        structure: str,
        width: int = 0,
        skip: bool = True,
    ) -> None:
        super().__init__()
        self.x_shape = tuple(x_shape)
        self.state_shapes = [tuple(s) for s in state_shapes]
        self.structure = structure
        check_positive_int("Initializer width", width, minimum=0)
        if not skip and not width:
            raise ValueError(
                "an initializer without the skip path needs a hidden layer (width > 0)"
            )
        self.skip = skip
        in_features = self.x_shape[0] if len(self.x_shape) == 3 else self.x_shape[-1]
        self.hidden: nn.Module | None = None
        if width and len(self.x_shape) == 3:
            self.hidden = nn.Conv2d(in_features, width, 3, padding=1)
        elif width and len(self.x_shape) == 2:
            self.hidden = CausalConv(in_features, width)
        elif width:
            self.hidden = nn.Linear(in_features, width)
        self.heads = nn.ModuleList(
            _PartHead(torch.Size(x_shape), in_features * skip + width, torch.Size(s))
            for s in self.state_shapes
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple | list:
        sequence = len(self.x_shape) == 2
        if x.dim() != len(self.x_shape) + 1 or (
            x.shape[-1:] != self.x_shape[-1:] if sequence else tuple(x.shape[1:]) != self.x_shape
        ):
            expected = f"(length, {self.x_shape[-1]})" if sequence else str(self.x_shape)
            raise StateMismatchError(
                f"this initializer was built for inputs of per-sample shape {expected}, "
                f"got {tuple(x.shape[1:])}"
            )
        features = x
        if self.hidden is not None:
            hidden = F.relu(self.hidden(x))
            channel_dim = 1 if x.dim() == 4 else -1
            features = torch.cat([x, hidden], dim=channel_dim) if self.skip else hidden
        parts = [head(features) for head in self.heads]
        if self.structure == "tensor":
            return parts[0]
        return tuple(parts) if self.structure == "tuple" else parts
