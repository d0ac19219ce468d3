"""Contrastive self-supervised pre-training (SimCLR-style) with an equilibrium backbone.

Two random views of each image go through a backbone (the MDEQ trunk, or its explicit
counterpart) and a projection head; the NT-Xent loss pulls the views of one image together.
The second view's solve can start from the first view's fixed point. The backbone is judged by
a linear probe on its frozen features. `equilibria train --task ssl` runs all of it.
"""

from .augment import ViewAugment
from .backbone import DEQBackbone, ExplicitBackbone, ProjectionHead, pooled_features
from .engine import contrastive_step
from .loss import contrastive_correct, nt_xent
from .model import ContrastiveModel, ViewPair, build_backbone, build_contrastive_model
from .probe import LinearProbe, extract_features, fit_linear_probe, probe_backbone

__all__ = [
    "ContrastiveModel",
    "DEQBackbone",
    "ExplicitBackbone",
    "LinearProbe",
    "ProjectionHead",
    "ViewAugment",
    "ViewPair",
    "build_backbone",
    "build_contrastive_model",
    "contrastive_correct",
    "contrastive_step",
    "extract_features",
    "fit_linear_probe",
    "nt_xent",
    "pooled_features",
    "probe_backbone",
]
