"""One classification training step and one evaluation pass, with the solver statistics they
produce."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data import ImageData, ImageSplit
from ..training.distributed import Runtime
from ..training.metrics import solve_sums
from ..training.sampling import shard
from ..training.step import autocast, penalized, update


def train_step(
    network: nn.Module,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    *,
    precision: str = "fp32",
    label_smoothing: float = 0.0,
    grad_clip: float = 0.0,
    solve: dict[str, Any] | None = None,
) -> dict[str, float]:
    """One optimizer step on the batch (x, y); returns the sums a `Meter` adds up.

    `network` is what runs the forward (the model, or its DistributedDataParallel wrapper);
    `model` is the model itself, whose `stats` describe the solve of this step; `solve` holds
    keywords for the model's solve (its start `z0`, say).
    """
    network.train()
    optimizer.zero_grad(set_to_none=True)
    with autocast(x.device, precision):
        logits = network(x, **(solve or {}))
    loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
    stats = getattr(model, "stats", None)
    update(penalized(loss, stats), model, optimizer, scheduler, grad_clip=grad_clip)
    count = y.shape[0]
    sums = {
        "loss": float(loss.detach()) * count,
        "correct": float((logits.argmax(1) == y).sum()),
        "samples": count,
        "steps": 1,
    }
    if stats is not None:
        sums.update(solve_sums(stats))
    return sums


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: ImageData,
    split: ImageSplit,
    runtime: Runtime,
    *,
    batch_size: int,
    precision: str = "fp32",
    **solve: Any,
) -> dict[str, float | None]:
    """Loss, accuracy and (for equilibrium models) mean forward NFE, residual and converged
    fraction per sample on `split`, over every process; `solve` overrides the solver settings."""
    model.eval()
    indices = shard(len(split), runtime.rank, runtime.world_size)
    sums = torch.zeros(6, dtype=torch.float64)
    for start in range(0, len(indices), batch_size):
        batch = indices[start : start + batch_size]
        x = data.inputs(split.images[batch], runtime.device)
        y = split.labels[batch].to(runtime.device)
        with autocast(runtime.device, precision):
            logits = model(x, **solve)
        count = y.shape[0]
        loss = F.cross_entropy(logits.float(), y, reduction="sum")
        stats = getattr(model, "stats", None)
        nfe = residual = converged = 0.0
        if stats is not None:
            nfe = stats.forward_nfe * count
            residual = float(stats.forward.residual.float().sum())
            converged = float(stats.converged.sum())
        sums += torch.tensor(
            [float(loss), float((logits.argmax(1) == y).sum()), count, nfe, residual, converged],
            dtype=torch.float64,
        )
    if runtime.distributed:
        sums = runtime.all_reduce_sum(sums.to(runtime.device)).cpu()
    loss, correct, count, nfe, residual, converged = sums.tolist()
    count = max(count, 1.0)
    solver_run = getattr(model, "stats", None) is not None
    return {
        "loss": loss / count,
        "accuracy": correct / count,
        "forward_nfe": nfe / count if solver_run else None,
        "residual": residual / count if solver_run else None,
        "converged": converged / count if solver_run else None,
    }
