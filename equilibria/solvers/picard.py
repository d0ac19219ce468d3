"""Plain fixed-point (Picard) iteration with optional damping."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..errors import check_fraction
from .base import EvaluationBudget, Solver, Step


@dataclass(frozen=True)
class Picard(Solver):
    """z <- (1 - damping) z + damping f(z).

    Args:
        damping: weight of the new image in (0, 1]; 1 is the undamped iteration z <- f(z).
    """

    damping: float = 1.0
    name: ClassVar[str] = "picard"

    def __post_init__(self) -> None:
        check_fraction("Picard damping", self.damping)

    def step(
        self, f: EvaluationBudget, z: torch.Tensor, fz: torch.Tensor, g: torch.Tensor, state: Any
    ) -> Step:
        if self.damping == 1.0:
            return Step(z=fz, fz=None, state=state)
        return Step(z=z + self.damping * g, fz=None, state=state)
