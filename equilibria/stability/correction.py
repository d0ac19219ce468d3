"""Fixed-point correction: losses on several states along the forward solve.

Besides the output f(z*), a few states visited by the solver (evenly spaced along the solve) are
each given an inexact gradient (one-step or phantom) and a loss, weighted so that early states
count less: state i of n gets decay^(n - 1 - i), the output 1. This supervises the whole path to
the equilibrium, not only its end, which keeps training stable with cheap gradients.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..backward import Backward, OneStep, Phantom, make_backward
from ..errors import check_choice, check_fraction, check_positive_int
from ..fixed_point import SolveSettings
from ..state import State, StateLayout

CORRECTION_BACKWARDS = ("onestep", "phantom")


@dataclass(frozen=True)
class FixedPointCorrection:
    """Settings of fixed-point correction.

    Attributes:
        states: states that receive a loss, the DEQ output included (>= 2).
        decay: weight ratio between consecutive states, in (0, 1].
        backward: the inexact gradient given to each intermediate state: "onestep", "phantom",
            or an `eq.OneStep()` / `eq.Phantom(steps, tau)` object.
    """

    states: int = 3
    decay: float = 0.8
    backward: str | Backward = "onestep"

    def __post_init__(self) -> None:
        check_positive_int("FixedPointCorrection states", self.states, minimum=2)
        check_fraction("FixedPointCorrection decay", self.decay)
        if isinstance(self.backward, str):
            check_choice("FixedPointCorrection backward", self.backward, CORRECTION_BACKWARDS)
        backward = make_backward(self.backward)
        if not isinstance(backward, (OneStep, Phantom)):
            raise ValueError(
                f"FixedPointCorrection backward must be 'onestep' or 'phantom' (or eq.OneStep() / "
                f"eq.Phantom(...)), got {backward!r}: the intermediate states are not fixed "
                "points, so implicit and unrolled gradients do not apply"
            )
        object.__setattr__(self, "backward", backward)

    def weights(self, count: int) -> list[float]:
        """Loss weights for `count` states, earliest first; the last (the output) weighs 1."""
        return [self.decay ** (count - 1 - i) for i in range(count)]


@dataclass
class CorrectionStates:
    """States along the solve with their loss weights; the last state is the DEQ output."""

    states: list[State] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)

    def loss(self, loss_fn: Callable[[State], torch.Tensor]) -> torch.Tensor:
        """sum_i weight_i * loss_fn(state_i): use it instead of the loss on the output alone."""
        return sum(w * loss_fn(s) for w, s in zip(self.weights, self.states, strict=True))


class Trajectory:
    """Records a detached copy of every state at which the solver evaluates the cell."""

    def __init__(self, layout: StateLayout) -> None:
        self.layout = layout
        self.flat: list[torch.Tensor] = []

    def recording(self, f: Callable[[State], State]) -> Callable[[State], State]:
        def recorded(z: State) -> State:
            self.flat.append(self.layout.flatten(z).detach().clone())
            return f(z)

        return recorded

    def picked(self, count: int) -> list[torch.Tensor]:
        """Up to `count` recorded states, evenly spaced along the solve, earliest first."""
        n = len(self.flat)
        indices = sorted({round((i + 1) * n / (count + 1)) - 1 for i in range(count)} - {-1})
        return [self.flat[i] for i in indices]

    def corrections(
        self,
        correction: FixedPointCorrection,
        flat_cell: Callable[[torch.Tensor], torch.Tensor],
        settings: SolveSettings,
        output: State,
    ) -> CorrectionStates:
        """The intermediate states with the correction's gradient, then the output."""
        states = [
            self.layout.unflatten(
                correction.backward.attach(flat_cell, z, settings, lambda solution: None)
            )
            for z in self.picked(correction.states - 1)
        ]
        states.append(output)
        return CorrectionStates(states, correction.weights(len(states)))
