"""The NT-Xent contrastive loss (SimCLR, Chen et al., ICML 2020) and its top-1 accuracy."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _similarities(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Cosine similarities / temperature of the 2N projections, with -inf on the diagonal."""
    if z1.dim() != 2 or z1.shape != z2.shape:
        raise ValueError(
            "the two views' projections must be matrices (batch, features) of the same shape, "
            f"got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    if z1.shape[0] < 2:
        raise ValueError(f"a contrastive batch needs at least 2 samples, got {z1.shape[0]}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    z = torch.cat([z1, z2])
    z = F.normalize(z.to(torch.promote_types(z.dtype, torch.float32)), dim=1)  # bf16 -> fp32
    logits = z @ z.T / temperature
    return logits.fill_diagonal_(float("-inf"))


def _positives(batch: int, device: torch.device) -> torch.Tensor:
    """Index of each of the 2N projections' positive: sample i's other view."""
    index = torch.arange(batch, device=device)
    return torch.cat([index + batch, index])


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """The normalized-temperature cross-entropy of two views' projections (batch, features).

    Each of the 2N projections is classified among the other 2N - 1 by cosine similarity divided
    by `temperature`; its positive is the other view of the same sample. The mean over all 2N.
    """
    logits = _similarities(z1, z2, temperature)
    return F.cross_entropy(logits, _positives(z1.shape[0], logits.device))


@torch.no_grad()
def contrastive_correct(z1: torch.Tensor, z2: torch.Tensor) -> int:
    """How many of the 2N projections have their positive as the most similar other one."""
    logits = _similarities(z1, z2, 1.0)
    return int((logits.argmax(1) == _positives(z1.shape[0], logits.device)).sum())
