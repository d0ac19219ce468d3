"""A trained model frozen for measurement: its DEQ layer, the DEQ inputs it sees, and held-out
batches (test images, or validation text windows). The learned-solver and Krylov parts measure
solves on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import equilibria as eq


@dataclass
class Frozen:
    """A trained model with its DEQ layer, the DEQ inputs it sees, and held-out batches.

    `test_batches` holds (model input, targets) pairs: test images and labels, or validation
    windows and their next characters; `test_inputs` the DEQ inputs of those batches.
    """

    model: torch.nn.Module
    deq: eq.DEQ
    task: str  # "classify" or "lm"
    train_inputs: list[Any]
    test_batches: list[tuple[torch.Tensor, torch.Tensor]]
    test_inputs: list[Any]
    parameters: int
    path: Path

    @property
    def test_samples(self) -> int:
        """Held-out images, or predicted characters."""
        return sum(targets.numel() for _, targets in self.test_batches)

    @property
    def metric(self) -> dict[str, Any]:
        """What `task_metric` measures: its name, whether higher is better, its display scale."""
        if self.task == "lm":
            return {"name": "validation bits/char", "higher_is_better": False, "scale": 1.0}
        return {"name": "test accuracy %", "higher_is_better": True, "scale": 100.0}

    def logits(self, state: Any) -> torch.Tensor:
        """The model's output layer applied to a DEQ state (flattened over positions)."""
        if self.task == "lm":
            return self.model._logits(state).flatten(0, 1)
        return self.model.head(state)


@dataclass(frozen=True)
class Sampling:
    """Which inputs a frozen model comes with.

    Attributes:
        task: "classify" (an MDEQ checkpoint) or "lm" (a DEQ-Transformer checkpoint).
        train_batches, batch_size: the training inputs drawn (images, or text windows).
        test_batches: held-out batches kept (None: the whole test split).
    """

    task: str = "classify"
    train_batches: int = 12
    batch_size: int = 128
    test_batches: int | None = None


def load_frozen(path: Path, sampling: Sampling) -> Frozen:
    """The model of checkpoint `path` in eval mode, with its DEQ inputs (`sampling.task`)."""
    if sampling.task == "lm":
        return load_frozen_language_model(path, sampling)
    return load_frozen_classifier(path, sampling)


def load_frozen_classifier(path: Path, sampling: Sampling) -> Frozen:
    """The MDEQ of checkpoint `path` in eval mode, with the DEQ inputs of its images."""
    from equilibria.config import Config
    from equilibria.data import load_data
    from equilibria.models import build_model
    from equilibria.neural.inputs import deq_inputs, find_deq
    from equilibria.training.checkpoint import load_checkpoint, restore_model

    checkpoint = load_checkpoint(path)
    config = Config.from_dict(checkpoint["config"])
    data = load_data(config.data.dataset, config.data.data_dir, download=config.data.download)
    model = build_model(config, data.shape, data.classes)
    restore_model(model, checkpoint.get("average") or checkpoint["model"], str(path))
    model.eval()
    deq = find_deq(model)
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))
    chosen = order[: sampling.train_batches * sampling.batch_size].split(sampling.batch_size)
    train_images = [data.inputs(data.train.images[idx]) for idx in chosen]
    test_idx = list(torch.arange(len(data.test)).split(sampling.batch_size))
    test_idx = test_idx[: sampling.test_batches] if sampling.test_batches else test_idx
    test_images = [data.inputs(data.test.images[idx]) for idx in test_idx]
    return Frozen(
        model=model,
        deq=deq,
        task="classify",
        train_inputs=deq_inputs(model, deq, train_images),
        test_batches=[
            (x, data.test.labels[idx]) for x, idx in zip(test_images, test_idx, strict=True)
        ],
        test_inputs=deq_inputs(model, deq, test_images),
        parameters=sum(p.numel() for p in model.parameters()),
        path=path,
    )


def load_frozen_language_model(path: Path, sampling: Sampling) -> Frozen:
    """The DEQ-Transformer of checkpoint `path` in eval mode: the DEQ inputs of training windows
    (drawn as `equilibria train-solver` draws them) and consecutive validation windows."""
    from equilibria.lm.restore import load_language_model, scored_text
    from equilibria.lm.solver_inputs import training_windows
    from equilibria.neural.inputs import deq_inputs, find_deq

    config, vocab, model = load_language_model(path, None)
    model.eval()
    deq = find_deq(model)
    data = scored_text(config, vocab, path)
    length = config.lm.seq_len
    train = training_windows(data, sampling.train_batches, sampling.batch_size, length)
    starts = data.val_starts(length, len(data.val)).split(sampling.batch_size)
    starts = starts[: sampling.test_batches] if sampling.test_batches else starts
    test = [data.windows(data.val, batch, length) for batch in starts]
    return Frozen(
        model=model,
        deq=deq,
        task="lm",
        train_inputs=deq_inputs(model, deq, train),
        test_batches=test,
        test_inputs=deq_inputs(model, deq, [tokens for tokens, _ in test]),
        parameters=sum(p.numel() for p in model.parameters()),
        path=path,
    )
