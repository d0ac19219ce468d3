"""Image classifiers: the multiscale DEQ (`MDEQ`) and its explicit counterpart (`ResNet`)."""

from __future__ import annotations

from .blocks import BranchBlock, ClassificationHead, MultiscaleFusion, Stem, branch_sizes
from .build import ARCHITECTURES, Architecture, build_model, deq_options, monotone_model
from .mdeq import MDEQ, MDEQCell
from .monotone import MonotoneNet
from .resnet import ResNet
from .transformer import DEQTransformer, ExplicitTransformer, TransformerBlock

__all__ = [
    "ARCHITECTURES",
    "MDEQ",
    "Architecture",
    "BranchBlock",
    "ClassificationHead",
    "MDEQCell",
    "MonotoneNet",
    "MultiscaleFusion",
    "ResNet",
    "Stem",
    "branch_sizes",
    "build_model",
    "deq_options",
    "monotone_model",
    "DEQTransformer",
    "ExplicitTransformer",
    "TransformerBlock",
]

from .inr import DEQINR, FourierFeatures, FourierMLP, SineCell  # noqa: E402

__all__ += ["DEQINR", "FourierFeatures", "FourierMLP", "SineCell"]
