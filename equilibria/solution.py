"""What a solve returns: the fixed point, per-sample residuals, the trace and a status."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch

from .state import State


class Status(str, enum.Enum):
    """Why a solve stopped.

    A sample diverges when its residual grows `divergence_ratio`-fold over its initial one or
    its iterate becomes non-finite; it then stops counting, and the other samples go on.
    """

    CONVERGED = "converged"  # every sample reached the tolerance
    MAX_ITER = "max_iter"  # the evaluation budget ran out first
    STAGNATED = "stagnated"  # no sample still being solved improved for `patience` iterations
    DIVERGED = "diverged"  # every sample that did not reach the tolerance diverged

    def __str__(self) -> str:
        return self.value


@dataclass
class Solution:
    """The result of a fixed-point solve.

    Attributes:
        z: each sample's lowest-residual iterate, in the structure and dtype of the initial state.
        nfe: number of function evaluations used.
        converged: bool tensor, one entry per sample: residual <= tol (in `stop_mode`).
        abs_residual: ||f(z) - z|| per sample, at the returned iterate.
        rel_residual: ||f(z) - z|| / ||f(z)|| per sample, at the returned iterate.
        abs_trace, rel_trace: residuals of every iterate, shape (iterations, batch).
        status: why the solve stopped (`Status`).
        tol, stop_mode, solver: the settings that produced it.
        fz: f(z), the function's value at the returned iterates (same structure as z), computed
            by the solve itself; None where a solve did not keep it.
        backward: with an implicit backward, the adjoint solve's `Solution` once the gradient
            has been computed (None before, and for strategies without an adjoint solve).
        backward_nfe: evaluations (vector-Jacobian products) of that adjoint solve; 0 for
            strategies without one; None before the backward has run or without a strategy.
        reconstruction_error: with the reversible backward, the largest relative error of the
            states its backward rebuilt (against the kept states and z0), once it has run.
    """

    z: State
    nfe: int
    converged: torch.Tensor
    abs_residual: torch.Tensor
    rel_residual: torch.Tensor
    abs_trace: torch.Tensor
    rel_trace: torch.Tensor
    status: Status
    tol: float
    stop_mode: str
    solver: str
    fz: State | None = None
    backward: Solution | None = None
    backward_nfe: int | None = None
    reconstruction_error: float | None = None

    def record_backward(self, adjoint: Solution) -> None:
        """Keep the adjoint solve of this solution's implicit backward (called by it)."""
        self.backward = adjoint
        self.backward_nfe = adjoint.nfe

    @property
    def residual(self) -> torch.Tensor:
        """Per-sample residual in the stopping mode."""
        return self.rel_residual if self.stop_mode == "rel" else self.abs_residual

    @property
    def trace(self) -> torch.Tensor:
        """Residual trace in the stopping mode, shape (iterations, batch)."""
        return self.rel_trace if self.stop_mode == "rel" else self.abs_trace

    @property
    def all_converged(self) -> bool:
        return bool(self.converged.all())

    @property
    def message(self) -> str:
        """One readable line: outcome, samples below tolerance, evaluations and worst residual."""
        done = int(self.converged.sum())
        batch = self.converged.numel()
        worst = float(self.residual.max()) if batch else 0.0
        reasons = {
            Status.CONVERGED: "converged",
            Status.MAX_ITER: "stopped at the evaluation limit",
            Status.STAGNATED: "stopped: the residual stopped improving",
            Status.DIVERGED: "stopped: the iteration diverged",
        }
        return (
            f"{self.solver} {reasons[self.status]}: {done}/{batch} samples below {self.stop_mode} "
            f"tol {self.tol:.1e} after {self.nfe} evaluations (worst {self.stop_mode} residual "
            f"{worst:.2e})"
        )

    def __repr__(self) -> str:
        return f"Solution({self.message})"
