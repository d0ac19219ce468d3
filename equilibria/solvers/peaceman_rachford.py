"""Peaceman-Rachford splitting for monotone equilibria (Winston & Kolter, 2020)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from .base import EvaluationBudget, Step
from .splitting import SplittingSolver, check_step_size, lipschitz_bound


@dataclass(frozen=True)
class PeacemanRachford(SplittingSolver):
    """Peaceman-Rachford splitting on a map with a monotone splitting z = prox(W z + c).

    With the state u (z = prox(u)), one step is
        u_half = 2 z - u
        z_half = (I + alpha (I - W))^{-1} (u_half + alpha c)
        u = 2 z_half - u_half
        z = prox(u),
    the composition of the two reflected resolvents, a contraction for every alpha > 0
    because I - W is strongly monotone and Lipschitz. On an adjoint splitting (the implicit
    backward of a monotone cell) the same steps run on v = D y, and the solver's iterate is
    y = W^T z_half + g = z_half + (z_half - u_half) / alpha, which the resolvent gives for free.

    Evaluations counted per step: one resolvent (for a convolutional cell an FFT-domain
    solve), plus the loop's evaluation of f at the new z.

    Args:
        alpha: step size, > 0; any value converges, the speed depends on it. None (the
            default) takes 1 / sqrt(m L) (L = ||I - W||_2), which minimizes
            max((1 - alpha m) / (1 + alpha m), (alpha L - 1) / (alpha L + 1)); that is the
            contraction factor of the reflected resolvent only for a symmetric W (the skew
            part B - B^T of a monotone cell makes the true factor larger), so it is a
            heuristic that follows the map as training changes W. A fixed alpha = 1 falls
            behind several times over as L grows.
    """

    alpha: float | None = None
    name: ClassVar[str] = "peaceman_rachford"

    def __post_init__(self) -> None:
        check_step_size("peaceman_rachford alpha", self.alpha)

    def step_size(self, splitting: Any) -> float:
        """alpha for this splitting: the given one, or 1 / sqrt(m L)."""
        if self.alpha is not None:
            return float(self.alpha)
        return 1.0 / math.sqrt(splitting.m * lipschitz_bound(splitting))

    def step(
        self,
        f: EvaluationBudget,
        z: torch.Tensor,
        fz: torch.Tensor,
        g: torch.Tensor,
        state: torch.Tensor | None,
    ) -> Step:
        splitting = self.splitting_of(f, z)
        if f.remaining < 2:  # no room for the resolvent and the evaluation at the new z
            return Step(z=fz, fz=None, state=state)
        alpha = self.step_size(splitting)
        u = z if state is None else state  # the first step starts from u = z0
        u_half = 2 * splitting.prox(u, alpha) - u
        z_half = f.counted(splitting.resolvent, u_half + alpha * splitting.bias, alpha)
        u = 2 * z_half - u_half
        if splitting.preactivation:
            y = z_half + (z_half - u_half) / alpha
            return Step(z=y, fz=None, state=u)
        return Step(z=splitting.prox(u, alpha), fz=None, state=u)
