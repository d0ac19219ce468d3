"""An explicit counterpart of MDEQ: the same parts, applied once each with their own weights."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import check_positive_int
from .blocks import BranchBlock, ClassificationHead, Downsample, Stem


class ResNet(nn.Module):
    """Stem -> stages of residual `BranchBlock`s (one stage per resolution, stages joined by a
    strided conv) -> the MDEQ classification head over every stage's output.

    Memory for training grows with `blocks` (every activation is kept for backpropagation),
    unlike MDEQ's, which keeps one cell application.
    """

    def __init__(
        self,
        in_channels: int,
        classes: int,
        *,
        channels: Sequence[int] = (24, 24),
        blocks: int = 2,
        expansion: int = 4,
        groups: int = 4,
        dropout: float = 0.0,
        head_channels: int = 64,
        head_grid: int = 4,
        stem_stride: int = 1,
    ) -> None:
        super().__init__()
        check_positive_int("blocks", blocks)
        channels = tuple(check_positive_int("channels entry", c) for c in channels)
        if not channels:
            raise ValueError("channels needs at least one entry (one per resolution stage)")
        self.stem = Stem(in_channels, channels[0], groups, stem_stride)
        self.stages = nn.ModuleList(
            nn.ModuleList(
                BranchBlock(c, expansion, groups, dropout, residual=True) for _ in range(blocks)
            )
            for c in channels
        )
        self.transitions = nn.ModuleList(
            Downsample(cin, cout, 1, groups)
            for cin, cout in zip(channels[:-1], channels[1:], strict=True)
        )
        self.head = ClassificationHead(channels, head_channels, classes, groups, head_grid)

    stats = None  # an explicit network runs no solver

    def forward(self, x: torch.Tensor, **solve: Any) -> torch.Tensor:
        if solve:
            raise TypeError(
                f"the explicit resnet runs no solver, so {', '.join(sorted(solve))} cannot be set"
            )
        z = self.stem(x)
        outputs = []
        for i, stage in enumerate(self.stages):
            if i > 0:
                z = self.transitions[i - 1](z)
            for block in stage:
                z = block(z)
            outputs.append(z)
        return self.head(outputs)
