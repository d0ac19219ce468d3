"""The data and the model of a classification run, from its config."""

from __future__ import annotations

from torch import nn

from ..config import Config
from ..config.schema import DEQ_MODELS
from ..data import ImageData, load_data
from ..models import build_model


def training_data(config: Config) -> ImageData:
    """The data set [data] names, cut to `data.train_samples` training images."""
    data = load_data(config.data.dataset, config.data.data_dir, download=config.data.download)
    return data.with_train_samples(config.data.train_samples)


def classifier(config: Config, data: ImageData) -> nn.Module:
    """The classifier [model] describes, for the images and classes of `data`."""
    return build_model(config, data.shape, data.classes)


def explicit_model(config: Config) -> str | None:
    """`model.arch` when it runs no solver ("an explicit resnet"); None for an equilibrium one."""
    arch = config.model.arch
    return None if arch in DEQ_MODELS else f"an explicit {arch}"
