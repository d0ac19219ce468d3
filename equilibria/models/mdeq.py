"""The multiscale deep equilibrium classifier (MDEQ, Bai, Koltun and Kolter, NeurIPS 2020).

Several resolution branches are solved as one fixed point: the state is a tuple of feature maps
(highest resolution first), each branch runs its own residual block, the input is injected into
the highest resolution only, and the branches exchange information through a multiscale fusion
at every iteration. The equilibrium feeds a classification head.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..deq import DEQ, DEQStats
from ..errors import check_positive_int
from ..stability import weight_norm as apply_weight_norm
from .blocks import BranchBlock, ClassificationHead, MultiscaleFusion, Stem, branch_sizes
from .initializers import MultiscaleInitializer, initializer_options


class MDEQCell(nn.Module):
    """f(z, x) for a tuple state z = (z_0, ..., z_{n-1}) at halving resolutions.

    Branch i applies its `BranchBlock` (branch 0 with the injection x added), then the fusion
    mixes all branches into each one.
    """

    def __init__(
        self,
        channels: Sequence[int],
        *,
        expansion: int = 4,
        groups: int = 4,
        dropout: float = 0.0,
        residual: bool = False,
    ) -> None:
        super().__init__()
        self.channels = tuple(check_positive_int("channels entry", c) for c in channels)
        if not self.channels:
            raise ValueError("channels needs at least one entry (one per resolution branch)")
        self.blocks = nn.ModuleList(
            BranchBlock(c, expansion, groups, dropout, residual) for c in self.channels
        )
        self.fusion = MultiscaleFusion(self.channels, groups)

    def forward(self, z: Sequence[torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        branches = [
            block(state, x if i == 0 else None)
            for i, (block, state) in enumerate(zip(self.blocks, z, strict=True))
        ]
        return self.fusion(branches)

    def init_state(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Zeros at every resolution, for an injection `x` of shape (batch, channels[0], H, W)."""
        if x.dim() != 4 or x.shape[1] != self.channels[0]:
            raise ValueError(
                f"the MDEQ cell expects an injection of shape (batch, {self.channels[0]}, height, "
                f"width), got {tuple(x.shape)}"
            )
        sizes = branch_sizes(x.shape[2], x.shape[3], len(self.channels))
        return tuple(
            x.new_zeros(x.shape[0], c, h, w) for c, (h, w) in zip(self.channels, sizes, strict=True)
        )


class MDEQ(nn.Module):
    """Multiscale DEQ image classifier: stem -> equilibrium of `MDEQCell` -> head.

    Args:
        in_channels: channels of the input images.
        classes: number of classes.
        channels: channels of each resolution branch, highest resolution first.
        expansion: hidden width of a branch block, as a multiple of its channels.
        groups: GroupNorm groups.
        dropout: variational dropout rate in the branch blocks (one mask per forward solve).
        residual: the paper's identity shortcut in each branch block (see `BranchBlock`).
        weight_norm: weight-normalize every convolution of the cell (computed once per solve).
        head_channels: width of the classification head.
        head_grid: the head pools its lowest-resolution map to head_grid x head_grid cells.
        stem_stride: stride of the stem's first convolution (2 halves the solved resolution).
        init: "zeros" (every solve starts at zero) or "joint" (a `MultiscaleInitializer`
            trained with the model guesses the start; see `eq.DEQ(initializer=)`).
        init_weight: the weight of the initializer's fit loss.
        solver, tol, max_iter, **deq_options: settings of the `eq.DEQ` layer (backward,
            eval_max_iter, jacobian_penalty, pretrain, ...). A solve that misses its tolerance
            is normal here (training runs at a small cap), so `on_failure` defaults to "ignore";
            `model.stats` tells how far each solve got.

    Example:
        >>> model = MDEQ(1, 10, channels=(16, 32), max_iter=8)
        >>> logits = model(torch.randn(4, 1, 8, 8)); model.stats.forward_nfe
    """

    def __init__(
        self,
        in_channels: int,
        classes: int,
        *,
        channels: Sequence[int] = (24, 24),
        expansion: int = 4,
        groups: int = 4,
        dropout: float = 0.0,
        residual: bool = False,
        weight_norm: bool = True,
        head_channels: int = 64,
        head_grid: int = 4,
        stem_stride: int = 1,
        init: str = "zeros",
        init_weight: float = 1.0,
        solver: str = "anderson",
        tol: float = 1e-3,
        max_iter: int = 8,
        **deq_options: Any,
    ) -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        check_positive_int("classes", classes, minimum=2)
        check_positive_int("expansion", expansion)
        check_positive_int("groups", groups)
        check_positive_int("head_channels", head_channels)
        check_positive_int("head_grid", head_grid)
        channels = tuple(channels)
        check_positive_int("stem_stride", stem_stride)
        self.stem = Stem(in_channels, channels[0], groups, stem_stride) if channels else None
        self.cell = MDEQCell(
            channels, expansion=expansion, groups=groups, dropout=dropout, residual=residual
        )
        if weight_norm:
            apply_weight_norm(self.cell)
        deq_options.setdefault("on_failure", "ignore")
        deq_options.update(
            initializer_options(init, init_weight, lambda: MultiscaleInitializer(channels, groups))
        )
        self.deq = DEQ(self.cell, solver, tol=tol, max_iter=max_iter, **deq_options)
        self.head = ClassificationHead(channels, head_channels, classes, groups, head_grid)

    @property
    def stats(self) -> DEQStats | None:
        """Statistics of the last forward solve (`eq.DEQStats`)."""
        return self.deq.stats

    def forward(self, x: torch.Tensor, **solve: Any) -> torch.Tensor:
        """Class scores for images `x`; `solve` overrides the DEQ settings for this call
        (solver=, tol=, max_iter=, on_failure=)."""
        if x.dim() != 4:
            raise ValueError(
                f"MDEQ expects images (batch, channels, height, width), got shape {tuple(x.shape)}"
            )
        return self.head(self.deq(self.stem(x), **solve))
