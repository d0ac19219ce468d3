"""Small ready-made cells f(z, x): for examples, tests and benchmarks."""

from __future__ import annotations

import torch
from torch import nn


def _scale_to_norm(weight: torch.Tensor, target: float) -> torch.Tensor:
    """`weight` rescaled so that its spectral norm equals `target`."""
    return weight * (target / torch.linalg.matrix_norm(weight, ord=2))


class TanhCell(nn.Module):
    """f(z, x) = tanh(W z + U x + b) on vectors, with ||W||_2 = `contraction` at initialization.

    Since tanh is 1-Lipschitz, a contraction below 1 guarantees a unique fixed point; values near 1
    give slow modes that make plain iteration crawl.
    """

    def __init__(self, features: int, input_features: int | None = None, contraction: float = 0.9):
        super().__init__()
        input_features = input_features or features
        self.linear = nn.Linear(features, features, bias=True)
        self.inject = nn.Linear(input_features, features, bias=False)
        with torch.no_grad():
            self.linear.weight.copy_(_scale_to_norm(self.linear.weight, contraction))

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.linear(z) + self.inject(x))

    def init_state(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.shape[0], self.linear.out_features)


class ConvCell(nn.Module):
    """A residual convolutional cell on images: f(z, x) = norm(relu(z + conv2(relu(conv1(z))) + x)).

    The state has the shape of the (already embedded) input `x`: (batch, channels, height, width).
    """

    def __init__(self, channels: int, hidden: int | None = None, groups: int = 4):
        super().__init__()
        hidden = hidden or 2 * channels
        self.conv1 = nn.Conv2d(channels, hidden, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(hidden, channels, 3, padding=1, bias=False)
        self.norm = nn.GroupNorm(groups, channels)
        with torch.no_grad():
            self.conv2.weight.mul_(0.5)

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(torch.relu(self.conv1(z)))
        return self.norm(torch.relu(z + y + x))
