"""Running sums of training statistics, their epoch means, and the per-epoch metrics file."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from .checkpoint import atomic_write_bytes
from .distributed import Runtime


@dataclass
class Meter:
    """Sums over the steps of one epoch (this process's share until `reduced`)."""

    loss: float = 0.0  # sum of per-sample losses
    correct: float = 0.0
    samples: float = 0.0
    steps: float = 0.0
    forward_nfe: float = 0.0  # sums over steps
    backward_nfe: float = 0.0
    residual: float = 0.0  # sum over steps of the batch-mean residual
    converged: float = 0.0  # samples whose solve reached the tolerance
    jacobian: float = 0.0  # sum over steps of the Jacobian penalty estimate

    def add(self, **values: float) -> None:
        for key, value in values.items():
            setattr(self, key, getattr(self, key) + float(value))

    def reduced(self, runtime: Runtime) -> Meter:
        """The sums over every process."""
        values = torch.tensor([getattr(self, f.name) for f in fields(self)], dtype=torch.float64)
        if runtime.distributed:
            values = runtime.all_reduce_sum(values.to(runtime.device)).cpu()
        return Meter(*values.tolist())

    def means(self) -> dict[str, float]:
        """Epoch means: loss and accuracy per sample, NFE and residual per step."""
        steps = max(self.steps, 1.0)
        samples = max(self.samples, 1.0)
        return {
            "train_loss": self.loss / samples,
            "train_accuracy": self.correct / samples,
            "train_forward_nfe": self.forward_nfe / steps,
            "train_backward_nfe": self.backward_nfe / steps,
            "train_residual": self.residual / steps,
            "train_converged": self.converged / samples,
            "jacobian_frobenius_sq": self.jacobian / steps,
        }

    def state(self) -> dict[str, float]:
        return asdict(self)


def write_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """Write one JSON object per line, atomically (the whole file is rewritten)."""
    text = "".join(json.dumps(record, sort_keys=False) + "\n" for record in records)
    atomic_write_bytes(path, text.encode())


def write_json(path: Path, value: Any) -> None:
    """Write `value` as indented JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(value, indent=2) + "\n").encode())
