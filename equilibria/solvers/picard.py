"""Plain fixed-point (Picard) iteration with optional damping."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..errors import check_fraction
from .base import EvaluationBudget, Solver, Step


@dataclass
class PicardState:
    norm: torch.Tensor  # (batch,) the residual norm at the current iterate
    damped: torch.Tensor  # (batch,) bool: samples that take damped steps from now on


@dataclass(frozen=True)
class Picard(Solver):
    """z <- (1 - damping) z + damping f(z).

    With `switch_ratio` r, each sample starts undamped and takes damped steps from the first
    step that shrinks its residual by less than r (||g_k|| > r ||g_k-1||), for good. On a
    linear map (an adjoint equation) the undamped iteration is the faster one on every
    eigenvalue in (-1, 1), so a well-conditioned sample converges at its own rate; a slow or
    growing one (an eigenvalue near or past 1) switches within a step or two to the damped
    iteration, whose multipliers stay positive and grow slowly past 1.

    Args:
        damping: weight of the new image in (0, 1]; 1 is the undamped iteration z <- f(z).
        switch_ratio: None (every step damped) or the residual ratio in (0, 1] above which a
            sample switches from undamped to damped steps.
    """

    damping: float = 1.0
    switch_ratio: float | None = None
    name: ClassVar[str] = "picard"

    def __post_init__(self) -> None:
        check_fraction("Picard damping", self.damping)
        if self.switch_ratio is not None:
            check_fraction("Picard switch_ratio", self.switch_ratio)

    def init(self, z: torch.Tensor, fz: torch.Tensor, g: torch.Tensor) -> PicardState | None:
        if self.switch_ratio is None or self.damping == 1.0:
            return None
        # no previous residual yet: the first step is undamped
        never = torch.full_like(g[:, 0], math.inf, dtype=torch.float64)
        return PicardState(norm=never, damped=torch.zeros_like(never, dtype=torch.bool))

    def step(
        self, f: EvaluationBudget, z: torch.Tensor, fz: torch.Tensor, g: torch.Tensor, state: Any
    ) -> Step:
        if isinstance(state, PicardState):
            return self._switching_step(f, z, fz, g, state)
        if self.damping == 1.0:
            return Step(z=fz, fz=None, state=state)
        return Step(z=z + self.damping * g, fz=None, state=state)

    def _switching_step(
        self,
        f: EvaluationBudget,
        z: torch.Tensor,
        fz: torch.Tensor,
        g: torch.Tensor,
        state: PicardState,
    ) -> Step:
        norm = f.residual_norm(g, fz).double()  # the loop's: no pass over the state
        slow = norm > self.switch_ratio * state.norm  # NaN compares False: stays as it was
        damped = state.damped | slow
        weight = torch.where(damped, self.damping, 1.0).to(g.dtype).unsqueeze(1)
        return Step(z=torch.addcmul(z, weight, g), fz=None, state=PicardState(norm, damped))
