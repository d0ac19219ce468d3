"""One contrastive training step: two random views, both through the model, NT-Xent, update."""

from __future__ import annotations

import torch

from ..training.metrics import adjoint_sums, solve_sums
from ..training.step import autocast, penalized, update
from .augment import ViewAugment
from .loss import contrastive_correct, nt_xent
from .model import ContrastiveModel


def contrastive_step(
    model: ContrastiveModel,
    x: torch.Tensor,
    augment: ViewAugment,
    generator: torch.Generator,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    *,
    temperature: float = 0.5,
    fill: torch.Tensor | float = 0.0,
    precision: str = "fp32",
    grad_clip: float = 0.0,
) -> tuple[dict[str, float], dict[str, float]]:
    """One optimizer step on two views of the normalized images `x`.

    Returns the sums a `Meter` adds up for the step (per image: the loss, and as "correct"
    the share of its two views whose positive is the most similar projection; for an
    equilibrium backbone the first view's solve and the backward NFE of both views) and the
    sums of the second view's solve (empty for an explicit backbone).
    """
    model.train()
    first, second = augment(x, generator, fill), augment(x, generator, fill)
    optimizer.zero_grad(set_to_none=True)
    with autocast(x.device, precision):
        pair = model(first, second)
    loss = nt_xent(pair.first.float(), pair.second.float(), temperature)
    solves = [s for s in (pair.first_stats, pair.second_stats) if s is not None]
    total = penalized(loss, *solves)
    update(total, model, optimizer, scheduler, grad_clip=grad_clip, what="contrastive loss")
    count = x.shape[0]  # per image: the loss and the share of its two views found correctly
    sums = {
        "loss": float(loss.detach()) * count,
        "correct": contrastive_correct(pair.first, pair.second) / 2,
        "samples": count,
        "steps": 1,
    }
    second_sums: dict[str, float] = {}
    if solves:
        first_stats, second_stats = pair.first_stats, pair.second_stats
        sums.update(
            solve_sums(first_stats),
            backward_nfe=sum(s.backward_nfe or 0 for s in solves),
            jacobian=sum(float(s.jacobian_frobenius_sq or 0.0) for s in solves),
            **adjoint_sums(*solves),  # both views' adjoint solves
        )
        second_sums = {**solve_sums(second_stats), "samples": x.shape[0], "steps": 1}
    return sums, second_sums
