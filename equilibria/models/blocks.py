"""Building blocks of the multiscale DEQ: branch blocks, multiscale fusion, stem and head."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..stability import VariationalDropout2d


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with at most `groups` groups (fewer when `channels` is smaller)."""
    return nn.GroupNorm(min(groups, channels), channels)


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def conv1x1(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, bias=False)


def branch_sizes(height: int, width: int, branches: int) -> list[tuple[int, int]]:
    """Spatial size of each resolution: halved (rounding up, as a stride-2 conv does) per level."""
    sizes = [(height, width)]
    for _ in range(branches - 1):
        h, w = sizes[-1]
        sizes.append(((h + 1) // 2, (w + 1) // 2))
    return sizes


class BranchBlock(nn.Module):
    """The block of one resolution branch.

    z -> conv3x3 (widen) -> GroupNorm -> ReLU -> conv3x3 (back) -> variational dropout
    -> (+ injection) -> GroupNorm -> ReLU.

    With `residual`, the input is added back before the ReLU and a third GroupNorm follows, as
    in the NeurIPS 2020 block (... -> GroupNorm -> (+ z) -> ReLU -> GroupNorm). Inside an
    equilibrium that shortcut keeps the map close to the identity, so solves converge far more
    slowly; explicit networks (`ResNet`) use it, the DEQ cell does not by default.
    """

    def __init__(
        self, channels: int, expansion: int, groups: int, dropout: float, residual: bool = False
    ) -> None:
        super().__init__()
        hidden = channels * expansion
        self.residual = residual
        self.conv1 = conv3x3(channels, hidden)
        self.norm1 = group_norm(hidden, groups)
        self.conv2 = conv3x3(hidden, channels)
        self.dropout = VariationalDropout2d(dropout)
        self.norm2 = group_norm(channels, groups)
        self.norm3 = group_norm(channels, groups) if residual else None

    def forward(self, z: torch.Tensor, injection: torch.Tensor | None = None) -> torch.Tensor:
        out = self.dropout(self.conv2(F.relu(self.norm1(self.conv1(z)))))
        if injection is not None:
            out = out + injection
        out = self.norm2(out)
        if self.norm3 is None:
            return F.relu(out)
        return self.norm3(F.relu(out + z))


class Upsample(nn.Module):
    """A lower resolution brought up: 1x1 conv, GroupNorm, nearest-neighbour upsampling."""

    def __init__(self, cin: int, cout: int, groups: int) -> None:
        super().__init__()
        self.conv = conv1x1(cin, cout)
        self.norm = group_norm(cout, groups)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return F.interpolate(self.norm(self.conv(x)), size=size, mode="nearest")


class Downsample(nn.Sequential):
    """A higher resolution brought down `levels` times by strided 3x3 convs with GroupNorm."""

    def __init__(self, cin: int, cout: int, levels: int, groups: int) -> None:
        layers: list[nn.Module] = []
        for level in range(levels):
            last = level == levels - 1
            width = cout if last else cin
            layers += [conv3x3(cin, width, stride=2), group_norm(width, groups)]
            if not last:
                layers.append(nn.ReLU())
        super().__init__(*layers)


class MultiscaleFusion(nn.Module):
    """Every branch receives the sum of all branches brought to its resolution, then
    ReLU -> 1x1 conv -> GroupNorm."""

    def __init__(self, channels: Sequence[int], groups: int) -> None:
        super().__init__()
        n = len(channels)
        self.paths = nn.ModuleList()
        for j in range(n):
            row = nn.ModuleList()
            for i in range(n):
                if i == j:
                    row.append(nn.Identity())
                elif i > j:
                    row.append(Upsample(channels[i], channels[j], groups))
                else:
                    row.append(Downsample(channels[i], channels[j], j - i, groups))
            self.paths.append(row)
        self.post = nn.ModuleList(
            nn.Sequential(nn.ReLU(), conv1x1(c, c), group_norm(c, groups)) for c in channels
        )

    def forward(self, states: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        fused = []
        for j, (row, post) in enumerate(zip(self.paths, self.post, strict=True)):
            size = states[j].shape[-2:]
            total = states[j]
            for i, (path, state) in enumerate(zip(row, states, strict=True)):
                if i < j:
                    total = total + path(state)
                elif i > j:
                    total = total + path(state, size)
            fused.append(post(total))
        return tuple(fused)


class Stem(nn.Sequential):
    """Input images to the injection of the highest-resolution branch (the first conv strided
    by `stride`, so larger images can be solved at a lower resolution)."""

    def __init__(self, cin: int, cout: int, groups: int, stride: int = 1) -> None:
        super().__init__(
            conv3x3(cin, cout, stride=stride),
            group_norm(cout, groups),
            nn.ReLU(),
            conv3x3(cout, cout),
            group_norm(cout, groups),
        )


class ClassificationHead(nn.Module):
    """Multiscale features to class scores.

    Each branch is projected to `width` channels (1x1 conv, GroupNorm, ReLU); starting at the
    highest resolution, the running sum is brought down one level (strided 3x3 conv) and the next
    branch's projection added; the lowest-resolution map is averaged to `grid` x `grid` cells
    (1: a global average) and classified by a linear layer.
    """

    def __init__(
        self, channels: Sequence[int], width: int, classes: int, groups: int, grid: int = 4
    ) -> None:
        super().__init__()
        self.project = nn.ModuleList(
            nn.Sequential(conv1x1(c, width), group_norm(width, groups), nn.ReLU()) for c in channels
        )
        self.down = nn.ModuleList(
            nn.Sequential(conv3x3(width, width, stride=2), group_norm(width, groups), nn.ReLU())
            for _ in channels[1:]
        )
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.classify = nn.Linear(width * grid * grid, classes)

    def forward(self, states: Sequence[torch.Tensor]) -> torch.Tensor:
        y = self.project[0](states[0])
        for down, project, state in zip(self.down, self.project[1:], states[1:], strict=True):
            y = down(y) + project(state)
        return self.classify(self.pool(y).flatten(1))
