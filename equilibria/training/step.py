"""What every task's training step shares: mixed precision, the solver's auxiliary losses, and
one checked optimizer update."""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch
from torch import nn

from ..deq import DEQStats
from ..errors import NonFiniteError


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """bf16 autocast for precision "bf16", a no-op context for "fp32"."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def penalized(loss: torch.Tensor, *solves: DEQStats | None) -> torch.Tensor:
    """`loss` plus the auxiliary losses (Jacobian penalty, initializer fit) of each solve
    (None: no solve) that has them."""
    total = loss
    for stats in solves:
        extra = stats.auxiliary_loss if stats is not None else None
        if extra is not None:
            total = total + extra.float()
    return total


def update(
    total: torch.Tensor,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    *,
    grad_clip: float = 0.0,
    what: str = "training loss",
) -> None:
    """Backpropagate `total` (refused when not finite: the model diverged), clip the gradient
    norm of `model` to `grad_clip` (when positive), and step the optimizer and schedule."""
    if not bool(torch.isfinite(total)):
        raise NonFiniteError(
            f"the {what} became {float(total)} (the model diverged); lower optim.lr, "
            "set optim.grad_clip, or add a Jacobian penalty (deq.jacobian_gamma)"
        )
    total.backward()
    if grad_clip > 0:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
