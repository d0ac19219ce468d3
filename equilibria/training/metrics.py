"""Running sums of training statistics (the solver's among them) and their means over epochs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

from ..deq import DEQStats
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
    adjoint_solves: float = 0.0  # adjoint (implicit backward) solves
    adjoint_residual: float = 0.0  # sum over adjoint solves of the batch-mean residual
    adjoint_samples: float = 0.0  # samples those solves solved
    adjoint_converged: float = 0.0  # samples whose adjoint solve reached its tolerance

    def add(self, **values: float) -> None:
        for key, value in values.items():
            setattr(self, key, getattr(self, key) + float(value))

    def reduced(self, runtime: Runtime) -> Meter:
        """The sums over every process."""
        values = torch.tensor([getattr(self, f.name) for f in fields(self)], dtype=torch.float64)
        if runtime.distributed:
            values = runtime.all_reduce_sum(values.to(runtime.device)).cpu()
        return Meter(*values.tolist())

    def means(self) -> dict[str, float | None]:
        """Epoch means: loss and accuracy per sample, NFE and residual per step, the adjoint's
        residual per adjoint solve and its converged fraction (None: no adjoint solve ran)."""
        steps = max(self.steps, 1.0)
        samples = max(self.samples, 1.0)
        solved = self.adjoint_solves > 0
        return {
            "train_loss": self.loss / samples,
            "train_accuracy": self.correct / samples,
            "train_forward_nfe": self.forward_nfe / steps,
            "train_backward_nfe": self.backward_nfe / steps,
            "train_residual": self.residual / steps,
            "train_converged": self.converged / samples,
            "jacobian_frobenius_sq": self.jacobian / steps,
            "train_adjoint_residual": (
                self.adjoint_residual / self.adjoint_solves if solved else None
            ),
            "train_adjoint_converged": (
                self.adjoint_converged / self.adjoint_samples if solved else None
            ),
        }

    def state(self) -> dict[str, float]:
        return asdict(self)


def solve_sums(stats: DEQStats, samples_per_solve: int = 1) -> dict[str, float]:
    """A step's solver sums for a `Meter`; each solved sample counts `samples_per_solve`
    samples in the converged count (the positions of a sequence, say)."""
    return {
        "forward_nfe": stats.forward_nfe,
        "backward_nfe": stats.backward_nfe or 0,
        "residual": float(stats.forward.residual.float().mean()),
        "converged": float(stats.converged.sum()) * samples_per_solve,
        "jacobian": float(stats.jacobian_frobenius_sq or 0.0),
        **adjoint_sums(stats),
    }


def adjoint_sums(*stats: DEQStats) -> dict[str, float]:
    """The adjoint solves' sums for a `Meter` over the solves of one step (none: zeros), read
    after the backward pass has run."""
    adjoints = [s.backward for s in stats if s.backward is not None]
    return {
        "adjoint_solves": len(adjoints),
        "adjoint_residual": sum(float(a.residual.float().mean()) for a in adjoints),
        "adjoint_samples": sum(a.converged.numel() for a in adjoints),
        "adjoint_converged": sum(float(a.converged.sum()) for a in adjoints),
    }


def history_mean(history: Sequence[dict[str, Any]], key: str) -> float | None:
    """The mean of `key` over the epochs of `history` that recorded it (None: none did)."""
    values = [row[key] for row in history if row.get(key) is not None]
    return sum(values) / len(values) if values else None
