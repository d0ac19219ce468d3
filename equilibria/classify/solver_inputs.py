"""The DEQ inputs of training images for a learned solver (`equilibria train-solver`)."""

from __future__ import annotations

import torch

from ..data import load_data
from ..extras import require_installed
from ..models import build_model
from ..neural.inputs import deq_inputs, find_deq
from ..tasks import SolverInputs, SolverRequest
from ..training.checkpoint import restore_model

IMAGES_PER_BATCH = 128
INIT_WIDTH = 8


def solver_inputs(request: SolverRequest) -> SolverInputs:
    """The frozen classifier of `request.path` and the DEQ inputs of its training images
    (`request.batches` batches drawn with seed 0; no labels)."""
    config = request.config
    if request.data_dir:
        config = config.override([f"data.data_dir={request.data_dir}"])
    if config.data.dataset == "digits":
        require_installed("sklearn", "the digits data set")
    data = load_data(config.data.dataset, config.data.data_dir, download=config.data.download)
    model = build_model(config, data.shape, data.classes)
    checkpoint = request.checkpoint
    restore_model(model, checkpoint.get("average") or checkpoint["model"], str(request.path))
    model.to(request.device).eval()
    batch_size = request.batch_size or IMAGES_PER_BATCH
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))
    chosen = order[: request.batches * batch_size].split(batch_size)
    images = [data.inputs(data.train.images[idx], request.device) for idx in chosen]
    inputs = deq_inputs(model, find_deq(model), images)
    return SolverInputs(model, inputs, init_width=INIT_WIDTH, init_skip=True)
