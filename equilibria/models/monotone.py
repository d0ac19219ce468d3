"""An image classifier whose body is a monotone operator equilibrium (Winston & Kolter, 2020):
stem -> the equilibrium of `MonotoneConvCell` (unique for every parameter value) -> head."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..deq import DEQ, DEQStats
from ..errors import check_positive_int
from ..monotone import DEFAULT_MARGIN, MonotoneConvCell
from .blocks import ClassificationHead, Stem


class MonotoneNet(nn.Module):
    """Monotone-operator DEQ image classifier.

    Args:
        in_channels: channels of the input images.
        classes: number of classes.
        channels: channels of the equilibrium state (one resolution).
        groups: GroupNorm groups of the stem and head.
        head_channels, head_grid, stem_stride: as in `MDEQ`.
        m: the monotonicity margin of the cell.
        solver, tol, max_iter, **deq_options: settings of the `eq.DEQ` layer. The splitting
            solvers ("peaceman_rachford", "forward_backward") converge for every parameter
            value; `on_failure` defaults to "ignore", as in `MDEQ`.

    Example:
        >>> model = MonotoneNet(1, 10, channels=16, solver="peaceman_rachford", max_iter=40)
        >>> logits = model(torch.randn(4, 1, 8, 8)); model.stats.forward_nfe
    """

    def __init__(
        self,
        in_channels: int,
        classes: int,
        *,
        channels: int = 24,
        groups: int = 4,
        head_channels: int = 64,
        head_grid: int = 4,
        stem_stride: int = 1,
        m: float = DEFAULT_MARGIN,
        solver: str = "peaceman_rachford",
        tol: float = 1e-3,
        max_iter: int = 50,
        **deq_options: Any,
    ) -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        check_positive_int("classes", classes, minimum=2)
        check_positive_int("channels", channels)
        self.stem = Stem(in_channels, channels, groups, stem_stride)
        self.cell = MonotoneConvCell(channels, channels, m=m)
        deq_options.setdefault("on_failure", "ignore")
        self.deq = DEQ(self.cell, solver, tol=tol, max_iter=max_iter, **deq_options)
        self.head = ClassificationHead((channels,), head_channels, classes, groups, head_grid)

    @property
    def stats(self) -> DEQStats | None:
        """Statistics of the last forward solve (`eq.DEQStats`)."""
        return self.deq.stats

    def forward(self, x: torch.Tensor, **solve: Any) -> torch.Tensor:
        """Class scores for images `x`; `solve` overrides the DEQ settings for this call."""
        if x.dim() != 4:
            raise ValueError(
                f"MonotoneNet expects images (batch, channels, height, width), got shape "
                f"{tuple(x.shape)}"
            )
        return self.head((self.deq(self.stem(x), **solve),))
