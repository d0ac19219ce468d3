"""What the operator-splitting solvers share: finding the map's monotone splitting."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from ..errors import UnsupportedError
from .base import EvaluationBudget, Solver


class SplittingSolver(Solver):
    """A solver for monotone equilibria z = prox(W z + c), which steps with the map's splitting
    (`EvaluationBudget.splitting`, from the map's `splitting` attribute) rather than with f.

    The loop's residual stays the true f(z) - z; each application of the splitting's linear
    operator or resolvent counts as one evaluation.
    """

    needs_splitting: ClassVar[bool] = True

    def splitting_of(self, f: EvaluationBudget, z: torch.Tensor) -> Any:
        """The map's splitting, checked against the state; clear errors when there is none."""
        splitting = f.splitting
        if splitting is None:
            raise UnsupportedError(
                f"solver {self.name!r} needs the monotone splitting of the map (its "
                "`splitting` attribute), which only monotone cells provide: solve "
                "cell.equilibrium_map(x) of an equilibria.monotone.MonotoneLinearCell or "
                "MonotoneConvCell with eq.solve, or use the cell in eq.DEQ; for other maps "
                "use a general solver such as 'anderson'"
            )
        if splitting.features != z.shape[1]:
            raise ValueError(
                f"the map's splitting acts on {splitting.features} features per sample, but "
                f"the state has {z.shape[1]}"
            )
        if not (math.isfinite(splitting.m) and splitting.m > 0):
            raise ValueError(f"the splitting's margin m must be finite and > 0, got {splitting.m}")
        return splitting


def check_step_size(name: str, alpha: float | None) -> None:
    """alpha must be None or a finite number > 0."""
    if alpha is None:
        return
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(alpha).__name__}")
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {alpha!r}")


def lipschitz_bound(splitting: Any) -> float:
    """The splitting's L = ||I - W||_2, or a ValueError when it is not finite and > 0."""
    lipschitz = splitting.lipschitz
    if not (math.isfinite(lipschitz) and lipschitz > 0):
        raise ValueError(
            f"the splitting's bound L on ||I - W||_2 must be finite and > 0, got {lipschitz}"
        )
    return lipschitz
