"""The data and the model of a classification run, from its config (and, for a saved run, from
its checkpoint alone)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..config import Config
from ..config.schema import DEQ_MODELS
from ..data import ImageData, ImageSplit, load_data
from ..models import build_model
from ..training.checkpoint import restore_model

# what a checkpoint records of its images, so that a saved model is rebuilt without them
IMAGE_RECORD = ("name", "shape", "classes", "max_value", "mean", "std", "description")


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


def image_record(data: ImageData) -> dict[str, Any]:
    """What a checkpoint keeps of `data`: its name, image shape, classes and normalization."""
    return {
        "name": data.name,
        "shape": list(data.shape),
        "classes": data.classes,
        "max_value": data.max_value,
        "mean": list(data.mean),
        "std": list(data.std),
        "description": data.description,
    }


def recorded_images(config: Config, checkpoint: Mapping[str, Any]) -> ImageData:
    """The images of a saved run as an `ImageData` holding none: shape, classes and the
    normalization `inputs` applies. A checkpoint that does not record them all (one written
    before they were) takes them from the data set its config names."""
    record = checkpoint.get("data") or {}
    if not all(key in record for key in IMAGE_RECORD):
        record = image_record(training_data(config))
    empty = ImageSplit(
        torch.zeros((0, *record["shape"]), dtype=torch.uint8), torch.zeros(0, dtype=torch.int64)
    )
    return ImageData(
        name=record["name"],
        train=empty,
        test=empty,
        classes=int(record["classes"]),
        max_value=int(record["max_value"]),
        mean=tuple(float(v) for v in record["mean"]),
        std=tuple(float(v) for v in record["std"]),
        description=record["description"],
    )


def trained_classifier(config: Config, checkpoint: Mapping[str, Any]) -> nn.Module:
    """The classifier of a saved run (the weight average when it kept one), in eval mode."""
    model = classifier(config, recorded_images(config, checkpoint))
    restore_model(model, checkpoint.get("average") or checkpoint["model"], "the checkpoint")
    return model.eval()
