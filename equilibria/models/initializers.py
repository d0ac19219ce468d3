"""Jointly trained initial guesses z0 = h(x) for the models' DEQ layers (`eq.DEQ(initializer=)`).

Each is a small explicit network, a fraction of one cell evaluation, trained with the model on
the distance between its guess and the (detached) fixed point, so that every solve starts near
its answer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import check_choice, check_positive_int
from .blocks import conv1x1, conv3x3, group_norm

INITS = ("zeros", "joint")


class MultiscaleInitializer(nn.Module):
    """The MDEQ's state from its injection, per resolution: two 3x3 conv -> GroupNorm -> ReLU
    (the first strided down from the level above and `expansion` times wider), then the cell's
    own output stage, 1x1 conv -> GroupNorm, so each guess has the signs and scale of the fused
    state it stands for (a guess ending in ReLU could not fit the negative half of the state)."""

    def __init__(self, channels: Sequence[int], groups: int, expansion: int = 1) -> None:
        super().__init__()
        channels = tuple(channels)
        inputs = (channels[0], *channels[:-1])
        hidden = [c * check_positive_int("expansion", expansion) for c in channels]
        self.levels = nn.ModuleList(
            nn.Sequential(
                conv3x3(cin, width, stride=1 if i == 0 else 2),
                group_norm(width, groups),
                nn.ReLU(),
                conv3x3(width, cout),
                group_norm(cout, groups),
                nn.ReLU(),
            )
            for i, (cin, width, cout) in enumerate(zip(inputs, hidden, channels, strict=True))
        )
        self.outputs = nn.ModuleList(
            nn.Sequential(conv1x1(c, c), group_norm(c, groups)) for c in channels
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        states = []
        for level, output in zip(self.levels, self.outputs, strict=True):
            x = level(x)  # non-negative: the next level's input
            states.append(output(x))
        return tuple(states)


class SequenceInitializer(nn.Module):
    """The DEQ-Transformer's state from its embedded input, position by position (a two-layer
    MLP of the model's width; the memory of past segments, when given, is not used)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, width))

    def forward(self, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return self.net(inputs[0])


def initializer_options(init: str, weight: float, build: Callable[[], nn.Module]) -> dict[str, Any]:
    """`eq.DEQ` keywords for a model's `init` setting: none for "zeros" (the cell's own start),
    a network from `build` and its loss weight for "joint"."""
    check_choice("init", init, INITS)
    if init == "zeros":
        return {}
    return {"initializer": build(), "initializer_weight": weight}
