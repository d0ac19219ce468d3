"""The learned update: residual history in, Anderson-style mixing weights and damping out."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..solvers.base import write_slot


@dataclass
class History:
    """The last m iterates and residuals of each sample (a ring buffer) and their Gram matrix."""

    z: torch.Tensor  # (batch, m, features)
    g: torch.Tensor  # (batch, m, features)
    gram: torch.Tensor  # (batch, m, m): <g_i, g_j>
    age: torch.Tensor  # (m,): steps since each slot was written (large for empty slots)
    stored: int = 0
    next_slot: int = 0

    @classmethod
    def empty(cls, z: torch.Tensor, m: int) -> History:
        batch, features = z.shape
        return cls(
            z=z.new_zeros(batch, m, features),
            g=z.new_zeros(batch, m, features),
            gram=z.new_zeros(batch, m, m),
            age=torch.full((m,), m, dtype=torch.long, device=z.device),
        )

    def push(self, z: torch.Tensor, g: torch.Tensor) -> History:
        """A history with (z, g) written over the oldest slot."""
        slot = self.next_slot
        zs = write_slot(self.z, 1, slot, z)
        gs = write_slot(self.g, 1, slot, g)
        row = torch.bmm(gs, g.unsqueeze(2)).squeeze(2)
        gram = write_slot(write_slot(self.gram, 1, slot, row), 2, slot, row)
        age = (self.age + 1).clamp_max(self.age.numel())
        age[slot] = 0
        m = self.age.numel()
        return History(zs, gs, gram, age, min(self.stored + 1, m), (slot + 1) % m)

    @property
    def filled(self) -> torch.Tensor:
        """(m,) bool: slots holding an entry (slots fill in order, so the first `stored`)."""
        return torch.arange(self.age.numel(), device=self.age.device) < self.stored

    @property
    def newest(self) -> int:
        return (self.next_slot - 1) % self.age.numel()

    def mix(self, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """sum_i alpha_i (z_i + beta g_i): the next iterate for weights alpha and damping beta."""
        weights = alpha.unsqueeze(1)
        return torch.bmm(weights, self.z).squeeze(1) + beta * torch.bmm(weights, self.g).squeeze(1)


def anderson_weights(history: History, reg: float = 1e-8) -> torch.Tensor:
    """Classical Anderson weights: argmin ||sum_i a_i g_i|| subject to sum_i a_i = 1.

    Solved in float64 with Tikhonov regularization relative to the Gram matrix's trace, so it
    is finite even for a singular history; empty slots get weight 0.
    """
    n = history.stored
    gram = history.gram.double()[:, :n, :n]
    eye = torch.eye(n, dtype=gram.dtype, device=gram.device)
    scale = torch.diagonal(gram, dim1=1, dim2=2).mean(dim=1)
    system = gram + (reg * scale + 1e-30).view(-1, 1, 1) * eye
    ones = torch.ones(gram.shape[0], n, 1, dtype=gram.dtype, device=gram.device)
    w = torch.linalg.solve(system, ones).squeeze(2)
    alpha = F.pad(w / w.sum(dim=1, keepdim=True), (0, history.age.numel() - n))
    return alpha.to(history.g.dtype)


class MixingNetwork(nn.Module):
    """Predicts mixing weights (summing to 1 over the stored slots) and a damping in (0, 1).

    The weights are classical Anderson's plus a learned correction that sums to zero, so an
    untrained network reproduces Anderson (with damping close to 1) and training only has to
    learn what to change. Each slot is described by its Anderson weight, its row of the
    normalized residual Gram matrix, the log of its residual norm relative to the newest, its age,
    and its residual pooled to `pooled` numbers (the flat state averaged in contiguous chunks,
    which for images is a coarse spatial pooling). A shared encoder embeds every slot; each slot's
    correction reads its embedding next to the mean embedding, and the damping reads the mean.
    """

    def __init__(self, m: int = 5, pooled: int = 8, hidden: int = 8) -> None:
        super().__init__()
        self.m = m
        self.pooled = pooled
        inputs = 1 + m + 1 + m + pooled
        self.encode = nn.Sequential(
            nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.correction_head = nn.Linear(2 * hidden, 1)
        self.damping_head = nn.Linear(hidden, 1)
        with torch.no_grad():  # start as classical Anderson with damping ~0.95
            self.correction_head.weight.zero_()
            self.correction_head.bias.zero_()
            self.damping_head.weight.zero_()
            self.damping_head.bias.fill_(3.0)

    def forward(self, history: History) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(alpha (batch, m), beta (batch, 1), correction (batch, m)) for the current history."""
        dtype = self.correction_head.weight.dtype
        filled = history.filled
        classical = anderson_weights(history).detach()
        gram = history.gram.to(dtype)
        norms = torch.diagonal(gram, dim1=1, dim2=2).clamp_min(1e-30).sqrt()  # (batch, m)
        ref = norms[:, history.newest : history.newest + 1]
        gram_rows = gram / (norms.unsqueeze(2) * norms.unsqueeze(1))
        log_ratio = (norms / ref).log().clamp(-20, 20).unsqueeze(2)
        age = F.one_hot(history.age.clamp_max(self.m - 1), self.m).to(dtype)
        batch, m, features = history.g.shape
        pooled = F.adaptive_avg_pool1d(
            history.g.to(dtype).reshape(batch * m, 1, features), self.pooled
        ).reshape(batch, m, self.pooled) * (features**0.5 / ref.unsqueeze(2))
        slot_features = torch.cat(
            [
                classical.to(dtype).clamp(-10, 10).unsqueeze(2),
                gram_rows,
                log_ratio,
                age.expand(batch, m, m),
                pooled,
            ],
            dim=2,
        ) * filled.view(1, m, 1)
        embedded = self.encode(slot_features)
        mask = filled.view(1, m, 1).to(dtype)
        context = (embedded * mask).sum(1) / mask.sum(1).clamp_min(1)
        raw = (
            self.correction_head(
                torch.cat([embedded, context.unsqueeze(1).expand_as(embedded)], 2)
            ).squeeze(2)
            * filled
        )
        correction = (raw - raw.sum(1, keepdim=True) / history.stored) * filled  # sums to 0
        alpha = classical + correction.to(classical.dtype)
        beta = torch.sigmoid(self.damping_head(context)).to(history.g.dtype)
        return alpha, beta, correction
