"""The DEQ inputs of training windows for a learned solver (`equilibria train-solver`)."""

from __future__ import annotations

import torch

from ..data.text import TextData
from ..neural.inputs import deq_inputs, find_deq
from ..tasks import SolverInputs, SolverRequest
from .restore import load_language_model, scored_text

WINDOWS_PER_BATCH = 16
INIT_WIDTH = 16


def training_windows(
    data: TextData, batches: int, batch_size: int, length: int
) -> list[torch.Tensor]:
    """`batches` batches of `batch_size` training windows of `length` characters (seed 0)."""
    generator = torch.Generator().manual_seed(0)
    return [
        data.windows(data.train, data.random_starts(batch_size, length, generator), length)[0]
        for _ in range(batches)
    ]


def solver_inputs(request: SolverRequest) -> SolverInputs:
    """The frozen DEQ-Transformer of `request.path` and the DEQ inputs of `request.batches`
    batches of training windows (`lm.seq_len` characters each, drawn with seed 0). Its
    initializer reads the wide embeddings through its hidden layer only (no linear path)."""
    config = request.config
    _, vocab, model = load_language_model(request.path, None, request.checkpoint)
    data = scored_text(config, vocab, request.path)
    model.to(request.device).eval()
    size = request.batch_size or WINDOWS_PER_BATCH
    windows = training_windows(data, request.batches, size, config.lm.seq_len)
    inputs = deq_inputs(model, find_deq(model), [w.to(request.device) for w in windows])
    return SolverInputs(model, inputs, init_width=INIT_WIDTH, init_skip=False)
