"""Forward-backward splitting for monotone equilibria (Winston & Kolter, 2020)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from .base import EvaluationBudget, Step
from .splitting import SplittingSolver, check_step_size, lipschitz_bound


@dataclass(frozen=True)
class ForwardBackward(SplittingSolver):
    """z <- prox((1 - alpha) z + alpha (W z + c)) on a map with a monotone splitting.

    A gradient step on the m-strongly monotone, L-Lipschitz operator (I - W) z - c followed by
    the nonlinearity's prox; it contracts for alpha < 2 m / L^2 (L = ||I - W||_2). alpha = 1 is
    the plain iteration z <- f(z), which may diverge. On an adjoint splitting (the implicit
    backward of a monotone cell) the same step runs on v = D y, the solver's iterate being
    y = W^T v + g.

    Evaluations counted per step: one application of W, plus the loop's evaluation of f at the
    new z. The forward-backward step is slow where m / L is small; "peaceman_rachford"
    converges much faster on the same maps.

    Args:
        alpha: step size, > 0 and at most 2 m / L^2 (a larger one raises ValueError when the
            map's m and L are known); None takes m / L^2, which minimizes the contraction
            bound 1 - 2 alpha m + alpha^2 L^2.
    """

    alpha: float | None = None
    name: ClassVar[str] = "forward_backward"

    def __post_init__(self) -> None:
        check_step_size("forward_backward alpha", self.alpha)

    def step_size(self, splitting: Any) -> float:
        """alpha for this splitting, checked against the rule alpha <= 2 m / L^2."""
        m, lipschitz = splitting.m, lipschitz_bound(splitting)
        bound = 2 * m / lipschitz**2
        if self.alpha is None:
            return bound / 2
        if self.alpha > bound * (1 + 1e-9):
            raise ValueError(
                f"forward_backward alpha={self.alpha} breaks the step-size rule alpha <= "
                f"2 m / L^2 = {bound:.6g} for this map (m={m:g}, L=||I - W||_2={lipschitz:.6g}); "
                "pass a smaller alpha or alpha=None"
            )
        return float(self.alpha)

    def step(
        self, f: EvaluationBudget, z: torch.Tensor, fz: torch.Tensor, g: torch.Tensor, state: Any
    ) -> Step:
        splitting = self.splitting_of(f, z)
        alpha = self.step_size(splitting)
        if f.remaining < 2:  # no room for W and the evaluation at the new z
            return Step(z=fz, fz=None, state=state)
        if not splitting.preactivation:
            image = f.counted(splitting.linear, z) + splitting.bias
            return Step(z=splitting.prox(torch.lerp(z, image, alpha), alpha), fz=None, state=None)
        # adjoint: the state is v and the iterate y = L v + c, the step's "W v + c"; the first
        # step starts from v = prox(y), for which y is not L v + c: any start converges
        v = splitting.prox(z, alpha) if state is None else state
        v = splitting.prox(torch.lerp(v, z, alpha), alpha)
        y = f.counted(splitting.linear, v) + splitting.bias
        return Step(z=y, fz=None, state=v)
