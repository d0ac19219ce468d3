"""The `[ssl]` config section: contrastive self-supervised pre-training (`run.task=ssl`).

The backbone is [model] (arch mdeq: the multiscale DEQ trunk; arch resnet: the explicit
counterpart), solved as [deq] says and trained as [optim] says; this section holds what is
particular to contrastive training: the loss, the two views, the projection head, fixed-point
reuse between the views and the linear probe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .fields import Section, option


@dataclass(frozen=True)
class SSLConfig(Section):
    name: ClassVar[str] = "ssl"

    temperature: float = option(0.5, "NT-Xent temperature", above=0.0)
    projection_dim: int = option(32, "output width of the projection head", minimum=1)
    projection_hidden: int = option(128, "hidden width of the projection head", minimum=1)
    pool_grid: int = option(
        1, "backbone features: each branch rectified, averaged to a grid this size", minimum=1
    )
    reuse: bool = option(
        True, "mdeq only: start the second view's solve from the first view's fixed point"
    )
    aug_translate: float = option(
        0.15, "views: random translation, as a fraction of the image size", minimum=0.0
    )
    aug_rotate: float = option(15.0, "views: random rotation in degrees", minimum=0.0)
    aug_zoom: float = option(
        0.2, "views: random scale drawn from [1 - zoom, 1 + zoom]", minimum=0.0, maximum=0.9
    )
    aug_contrast: float = option(
        0.4, "views: random contrast factor from [1 - c, 1 + c]", minimum=0.0, maximum=1.0
    )
    aug_noise: float = option(0.1, "views: Gaussian noise std (normalized units)", minimum=0.0)
    aug_erase: float = option(
        0.5, "views: probability of blanking a random square", minimum=0.0, maximum=1.0
    )
    probe_every: int = option(
        0, "linear probe every N epochs during training (0: only after the last)", minimum=0
    )
    probe_init: bool = option(
        True, "also probe the randomly initialised backbone (the floor the training beats)"
    )
    probe_l2: float = option(1e-3, "L2 penalty of the linear probe", minimum=0.0)
    probe_iters: int = option(200, "L-BFGS iterations of the linear probe", minimum=1)
