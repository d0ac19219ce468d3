"""Backbones for contrastive training: the MDEQ trunk and its explicit counterpart, both ending
in the same pooled feature vector, and the projection head the loss sees.

Both trunks produce one feature map per resolution (highest first); `pooled_features` rectifies
each, averages it to a `grid` x `grid` grid and concatenates them, so the two backbones hand the
probe features of the same size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..deq import DEQ, DEQStats
from ..errors import check_positive_int
from ..models.blocks import BranchBlock, Downsample, Stem
from ..models.initializers import MultiscaleInitializer, initializer_options
from ..models.mdeq import MDEQCell
from ..stability import weight_norm as apply_weight_norm
from ..state import State


def pooled_features(states: Sequence[torch.Tensor], grid: int) -> torch.Tensor:
    """Each map rectified and averaged to `grid` x `grid` cells, flattened and concatenated:
    (batch, dim).

    Both trunks end in GroupNorm, whose output has a fixed mean over each group; averaging it
    directly would throw that information away (all of it with one channel per group), so the
    maps pass a ReLU first, as at the end of a ResNet.
    """
    return torch.cat([F.adaptive_avg_pool2d(F.relu(s), grid).flatten(1) for s in states], dim=1)


class DEQBackbone(nn.Module):
    """The trunk of `eq.models.MDEQ` without its head: stem -> equilibrium of `MDEQCell`.

    `equilibrium(x, z0)` returns the fixed point (a tuple of maps) and accepts a starting state,
    so a second view can start from the first view's fixed point; `forward` pools it.
    Keywords as for `MDEQ` (channels, expansion, groups, dropout, residual, weight_norm,
    stem_stride, solver, tol, max_iter and the other `eq.DEQ` settings).
    """

    def __init__(
        self,
        in_channels: int,
        *,
        channels: Sequence[int] = (24, 24),
        expansion: int = 4,
        groups: int = 4,
        dropout: float = 0.0,
        residual: bool = False,
        weight_norm: bool = True,
        stem_stride: int = 1,
        grid: int = 1,
        init: str = "zeros",
        init_weight: float = 1.0,
        solver: str = "anderson",
        tol: float = 1e-3,
        max_iter: int = 8,
        **deq_options: Any,
    ) -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        self.grid = check_positive_int("grid", grid)
        self.channels = tuple(channels)
        self.cell = MDEQCell(
            channels, expansion=expansion, groups=groups, dropout=dropout, residual=residual
        )
        self.stem = Stem(in_channels, self.channels[0], groups, stem_stride)
        if weight_norm:
            apply_weight_norm(self.cell)
        deq_options.setdefault("on_failure", "ignore")
        deq_options.update(
            initializer_options(init, init_weight, lambda: MultiscaleInitializer(channels, groups))
        )
        self.deq = DEQ(self.cell, solver, tol=tol, max_iter=max_iter, **deq_options)

    @property
    def stats(self) -> DEQStats | None:
        """Statistics of the last solve."""
        return self.deq.stats

    @property
    def feature_dim(self) -> int:
        return sum(self.channels) * self.grid * self.grid

    def equilibrium(self, x: torch.Tensor, z0: State | None = None, **solve: Any) -> State:
        """The fixed point for images `x`, solved from `z0` (None: zeros)."""
        if x.dim() != 4:
            raise ValueError(
                f"the backbone expects images (batch, channels, height, width), got shape "
                f"{tuple(x.shape)}"
            )
        return self.deq(self.stem(x), z0, **solve)

    def forward(self, x: torch.Tensor, **solve: Any) -> torch.Tensor:
        """Pooled equilibrium features (batch, feature_dim)."""
        return pooled_features(self.equilibrium(x, **solve), self.grid)


class ExplicitBackbone(nn.Module):
    """The trunk of `eq.models.ResNet` without its head: stem -> one stage of residual
    `BranchBlock`s per resolution, joined by strided convs; every stage's output is pooled."""

    stats = None  # an explicit network runs no solver

    def __init__(
        self,
        in_channels: int,
        *,
        channels: Sequence[int] = (24, 24),
        blocks: int = 2,
        expansion: int = 4,
        groups: int = 4,
        dropout: float = 0.0,
        stem_stride: int = 1,
        grid: int = 1,
    ) -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        check_positive_int("blocks", blocks)
        self.grid = check_positive_int("grid", grid)
        self.channels = tuple(check_positive_int("channels entry", c) for c in channels)
        if not self.channels:
            raise ValueError("channels needs at least one entry (one per resolution stage)")
        self.stem = Stem(in_channels, self.channels[0], groups, stem_stride)
        self.stages = nn.ModuleList(
            nn.Sequential(
                *(BranchBlock(c, expansion, groups, dropout, residual=True) for _ in range(blocks))
            )
            for c in self.channels
        )
        self.transitions = nn.ModuleList(
            Downsample(cin, cout, 1, groups)
            for cin, cout in zip(self.channels[:-1], self.channels[1:], strict=True)
        )

    @property
    def feature_dim(self) -> int:
        return sum(self.channels) * self.grid * self.grid

    def stage_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        z = self.stem(x)
        outputs = []
        for i, stage in enumerate(self.stages):
            if i > 0:
                z = self.transitions[i - 1](z)
            z = stage(z)
            outputs.append(z)
        return tuple(outputs)

    def forward(self, x: torch.Tensor, **solve: Any) -> torch.Tensor:
        """Pooled features (batch, feature_dim)."""
        if solve:
            raise TypeError(
                f"the explicit backbone runs no solver, so {', '.join(sorted(solve))} cannot be set"
            )
        return pooled_features(self.stage_outputs(x), self.grid)


class ProjectionHead(nn.Sequential):
    """Features -> Linear -> ReLU -> Linear: the space the contrastive loss compares in."""

    def __init__(self, features: int, hidden: int, out: int) -> None:
        super().__init__(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, out))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
