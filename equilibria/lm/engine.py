"""One language-model training step and one validation pass, in nats and bits per character."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data.text import TextData
from ..errors import check_choice
from ..models.transformer import DEQTransformer
from ..training.metrics import solve_sums
from ..training.step import autocast, penalized, update

LN2 = math.log(2.0)


def with_memory(
    model: nn.Module, inputs: torch.Tensor, memory: int, **solve: Any
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Split windows of `memory` + L inputs: the last L to predict, and the equilibrium states
    of the first `memory` (solved without gradients, with the `solve` settings) for them to
    attend to."""
    if not memory:
        return inputs, None
    if not isinstance(model, DEQTransformer):
        raise TypeError("a memory of past equilibria needs a DEQTransformer")
    with torch.no_grad():
        states = model.run(inputs[:, :memory], **solve).states
    return inputs[:, memory:], states


def train_step(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    *,
    memory: int = 0,
    precision: str = "fp32",
    label_smoothing: float = 0.0,
    grad_clip: float = 0.0,
) -> dict[str, float]:
    """One optimizer step on windows (batch, memory + L); returns the sums a `Meter` adds up
    (loss per predicted character, in nats)."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    inputs, context = with_memory(model, inputs, memory)
    targets = targets[:, memory:]
    with autocast(inputs.device, precision):
        logits = model(inputs) if context is None else model(inputs, context)
    logits = logits.float().flatten(0, 1)
    loss = F.cross_entropy(logits, targets.flatten(), label_smoothing=label_smoothing)
    stats = getattr(model, "stats", None)
    update(penalized(loss, stats), model, optimizer, scheduler, grad_clip=grad_clip)
    count = targets.numel()
    sums = {
        "loss": float(loss.detach()) * count,
        "correct": float((logits.argmax(1) == targets.flatten()).sum()),
        "samples": count,
        "steps": 1,
    }
    if stats is not None:  # one solve per window: its positions all count as converged
        sums.update(solve_sums(stats, samples_per_solve=targets.shape[1]))
    return sums


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: TextData,
    *,
    seq_len: int,
    memory: int,
    characters: int,
    batch_size: int,
    device: torch.device,
    precision: str = "fp32",
    split: str = "val",
    solve: dict[str, Any] | None = None,
) -> dict[str, float | None]:
    """Loss (nats), bits per character and accuracy of next-character prediction on the first
    `characters` of `split` ("val" or "train"; consecutive windows; each window after the first
    `memory` characters attends to the `memory` characters before it), and for a DEQ the mean
    forward NFE, residual and converged fraction per window.

    `solve` (solver=, tol=, max_iter=) replaces a DEQ's eval-mode settings in every solve, the
    memory's included.
    """
    tokens = data.val if check_choice("split", split, ("val", "train")) == "val" else data.train
    solve = solve or {}
    if (solve or memory) and not isinstance(model, DEQTransformer):
        raise TypeError("solve settings and a memory of past equilibria need a DEQTransformer")
    model.eval()
    starts = data.consecutive_starts(tokens, seq_len, characters - memory) + memory
    starts = starts[starts + seq_len < len(tokens)]
    if not len(starts):
        starts = torch.tensor([memory])
    loss = correct = count = nfe = residual = converged = 0.0
    for batch in starts.split(batch_size):
        inputs, targets = data.windows(tokens, batch - memory, seq_len + memory)
        inputs, context = with_memory(model, inputs.to(device), memory, **solve)
        targets = targets[:, memory:].to(device)
        with autocast(device, precision):
            deq = isinstance(model, DEQTransformer)
            logits = model(inputs, context, **solve) if deq else model(inputs)
        logits = logits.float().flatten(0, 1)
        loss += float(F.cross_entropy(logits, targets.flatten(), reduction="sum"))
        correct += float((logits.argmax(1) == targets.flatten()).sum())
        count += targets.numel()
        stats = getattr(model, "stats", None)
        if stats is not None:
            nfe += stats.forward_nfe * len(batch)
            residual += float(stats.forward.residual.float().sum())
            converged += float(stats.converged.sum())
    solved = getattr(model, "stats", None) is not None
    windows = len(starts)
    return {
        "loss": loss / count,
        "bpc": loss / count / LN2,
        "accuracy": correct / count,
        "characters": count,
        "forward_nfe": nfe / windows if solved else None,
        "residual": residual / windows if solved else None,
        "converged": converged / windows if solved else None,
    }
