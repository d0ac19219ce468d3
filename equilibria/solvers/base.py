"""The solver protocol: an immutable set of hyperparameters that knows how to take one step.

Everything else (counting evaluations, residuals, stopping, keeping each sample's best iterate,
non-finite checks) is the job of the shared loop in `equilibria.solvers.loop`, so a solver only
says how to propose the next iterate.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

FlatMap = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Step:
    """A proposed next iterate; `fz` is f(z) when the solver already evaluated it, else None."""

    z: torch.Tensor
    fz: torch.Tensor | None
    state: Any


class EvaluationBudget:
    """Wraps f so that every evaluation is counted; solvers read `remaining` before extra calls."""

    def __init__(self, fn: FlatMap, limit: int) -> None:
        self.fn = fn
        self.limit = limit
        self.count = 0

    @property
    def remaining(self) -> int:
        return self.limit - self.count

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        self.count += 1
        return self.fn(z)


class Solver(ABC):
    """A fixed-point solver for z = f(z) on `(batch, features)` matrices.

    Subclasses are frozen dataclasses holding hyperparameters only. `init` builds the solver's
    working state from the first iterate; `step` proposes the next iterate from the current one,
    its image `fz = f(z)` and residual `g = fz - z`.
    """

    name: ClassVar[str]

    def init(self, z: torch.Tensor, fz: torch.Tensor, g: torch.Tensor) -> Any:
        """Working state before the first step (history buffers and the like)."""
        return None

    @abstractmethod
    def step(
        self, f: EvaluationBudget, z: torch.Tensor, fz: torch.Tensor, g: torch.Tensor, state: Any
    ) -> Step:
        """Propose the next iterate. Extra calls to `f` are allowed and counted."""


def autocast_off(device: torch.device) -> AbstractContextManager:
    """A context in which the solvers' own products run in the state's dtype under autocast.

    Evaluations of f belong outside it: they run under the caller's autocast.
    """
    try:
        if not torch.is_autocast_enabled(device.type):  # the usual case: nothing to turn off
            return nullcontext()
    except TypeError:  # torch < 2.4 takes no device type here: turn it off to be sure
        pass
    try:
        return torch.autocast(device.type, enabled=False)
    except RuntimeError:  # a device type autocast does not support: nothing to turn off
        return nullcontext()


def output_rounding(fz: torch.Tensor) -> torch.Tensor:
    """Per sample, the size of the rounding in f's output, eps ||f(z)||, shape (batch, 1).

    Residual differences no longer than this carry no information about f.
    """
    return torch.finfo(fz.dtype).eps * fz.detach().norm(dim=1, keepdim=True)


def write_slot(buffer: torch.Tensor, dim: int, index: int, value: torch.Tensor) -> torch.Tensor:
    """Write `value` at position `index` of `buffer` along `dim`.

    In place when no gradient is being recorded (the usual no-grad forward solve); out of place
    when autograd is tracing the solve (the unrolled reference backward), so that saved tensors
    are never modified.
    """
    tracing = torch.is_grad_enabled() and (buffer.requires_grad or value.requires_grad)
    if not tracing:
        buffer.select(dim, index).copy_(value)
        return buffer
    position = torch.tensor([index], device=buffer.device)
    return buffer.index_copy(dim, position, value.unsqueeze(dim))
