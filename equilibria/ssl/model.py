"""A backbone with its projection head, the two-view forward pass, and building both from a
config."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import Config
from ..deq import DEQStats
from ..models import deq_options
from .backbone import DEQBackbone, ExplicitBackbone, ProjectionHead, pooled_features


@dataclass
class ViewPair:
    """The projections of two views of a batch and the statistics of each view's solve
    (None for an explicit backbone)."""

    first: torch.Tensor
    second: torch.Tensor
    first_stats: DEQStats | None = None
    second_stats: DEQStats | None = None


class ContrastiveModel(nn.Module):
    """`backbone` (features) followed by `projector` (what the NT-Xent loss sees).

    With `reuse`, an equilibrium backbone solves the second view starting from the first view's
    fixed point (detached) instead of from zeros.
    """

    def __init__(self, backbone: nn.Module, projector: nn.Module, *, reuse: bool = True) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = projector
        self.reuse = reuse

    @property
    def is_equilibrium(self) -> bool:
        return isinstance(self.backbone, DEQBackbone)

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> ViewPair:
        """Projections of both views (each (batch, projection_dim))."""
        if first.shape != second.shape:
            raise ValueError(
                f"the two views must have the same shape, got {tuple(first.shape)} and "
                f"{tuple(second.shape)}"
            )
        if not self.is_equilibrium:
            return ViewPair(
                self.projector(self.backbone(first)), self.projector(self.backbone(second))
            )
        backbone = self.backbone
        z1 = backbone.equilibrium(first)
        first_stats = backbone.stats
        z0 = tuple(z.detach() for z in z1) if self.reuse else None
        z2 = backbone.equilibrium(second, z0)
        return ViewPair(
            self.projector(pooled_features(z1, backbone.grid)),
            self.projector(pooled_features(z2, backbone.grid)),
            first_stats,
            backbone.stats,
        )


def build_backbone(config: Config, in_channels: int) -> nn.Module:
    """The backbone [model] describes (arch mdeq or resnet), pooled as [ssl] says."""
    m = config.model
    common = dict(
        channels=m.channels,
        expansion=m.expansion,
        groups=m.groups,
        dropout=m.dropout,
        stem_stride=m.stem_stride,
        grid=config.ssl.pool_grid,
    )
    if m.arch == "resnet":
        return ExplicitBackbone(in_channels, blocks=m.resnet_blocks, **common)
    return DEQBackbone(
        in_channels,
        residual=m.residual,
        weight_norm=m.weight_norm,
        **common,
        **deq_options(config),
    )


def build_contrastive_model(config: Config, in_channels: int) -> ContrastiveModel:
    """Backbone and projection head as the config describes."""
    backbone = build_backbone(config, in_channels)
    s = config.ssl
    projector = ProjectionHead(backbone.feature_dim, s.projection_hidden, s.projection_dim)
    return ContrastiveModel(backbone, projector, reuse=s.reuse)
