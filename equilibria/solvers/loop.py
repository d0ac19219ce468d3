"""The one driver loop shared by every solver.

It owns evaluation counting, per-sample residuals, stopping, each sample's best iterate and the
non-finite checks; the solver only proposes the next iterate. The loop synchronizes with the
device once per iteration (one small tensor of flags) to decide whether to stop.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import NonFiniteError
from ..solution import Status
from .base import EvaluationBudget, FlatMap, Solver

# a sample "makes progress" when its best residual drops by at least this fraction
PROGRESS_FRACTION = 1e-3


@dataclass
class LoopResult:
    z: torch.Tensor  # (batch, features) best iterate of each sample
    fz: torch.Tensor  # f at those iterates
    nfe: int
    abs_residual: torch.Tensor
    rel_residual: torch.Tensor
    abs_trace: torch.Tensor
    rel_trace: torch.Tensor
    status: Status


def _residuals(z: torch.Tensor, fz: torch.Tensor) -> tuple[torch.Tensor, ...]:
    g = fz - z
    with torch.no_grad():
        abs_res = g.norm(dim=1)
        rel_res = abs_res / (fz.norm(dim=1) + torch.finfo(fz.dtype).tiny)
    return g, abs_res, rel_res


class BestIterates:
    """Each sample's best iterate and its image so far.

    When every sample improved (the usual case) they are the new iterate and image themselves,
    with no pass over the state. Otherwise the improved samples' rows are copied into buffers
    this object owns (on CPU, where a row copy costs a fraction of a masked select over the
    whole state), or selected with one masked pass (on accelerators, where that pass is cheap
    and a row index would cost a synchronization; and under autograd, which must trace it).
    """

    def __init__(self, z: torch.Tensor, fz: torch.Tensor) -> None:
        self.z, self.fz = z, fz
        self._owned = False  # whether z and fz are buffers no one else holds

    def update(
        self, z: torch.Tensor, fz: torch.Tensor, improved: torch.Tensor, all_improved: bool
    ) -> None:
        if all_improved:
            self.z, self.fz, self._owned = z, fz, False
            return
        tracing = torch.is_grad_enabled() and any(t.requires_grad for t in (z, fz, self.z, self.fz))
        if tracing or z.device.type != "cpu":
            mask = improved.unsqueeze(1)
            self.z, self.fz = torch.where(mask, z, self.z), torch.where(mask, fz, self.fz)
            self._owned = not tracing
            return
        rows = improved.nonzero().squeeze(1)
        if not len(rows):
            return
        if not self._owned:  # the iterates it refers to may be held by the solver: copy them
            self.z, self.fz, self._owned = self.z.clone(), self.fz.clone(), True
        self.z.index_copy_(0, rows, z.index_select(0, rows))
        self.fz.index_copy_(0, rows, fz.index_select(0, rows))


def iterate(
    solver: Solver,
    fn: FlatMap,
    z0: torch.Tensor,
    *,
    tol: float,
    max_iter: int,
    stop_mode: str,
    patience: int | None,
    divergence_ratio: float,
    describe_nonfinite: Callable[[torch.Tensor], str] | None = None,
    splitting: Any = None,
) -> LoopResult:
    """Run `solver` on z = fn(z) from `z0` (a `(batch, features)` matrix).

    A sample has converged once its best residual is <= tol, and has diverged once its absolute
    residual exceeds `divergence_ratio` times its initial one or becomes non-finite at a
    non-finite iterate; a diverged sample stays diverged and stops counting as active (the
    solver still steps it along with the batch; like every sample it keeps its best iterate).
    The status is CONVERGED when every sample converged; DIVERGED when every sample that did
    not converge diverged; MAX_ITER after `max_iter` evaluations; STAGNATED when no active
    sample improved for `patience` iterations. Raises NonFiniteError when fn returns NaN/inf
    for a sample while every sample still being solved is at a finite point.
    `describe_nonfinite(flat)` turns a bad matrix into a "where" string for the message;
    `splitting` (fn's monotone splitting, or None) is handed to the solver with the budget.
    """
    f = EvaluationBudget(fn, max_iter, splitting)
    z = z0
    fz = f(z)
    g, abs_res, rel_res = _residuals(z, fz)
    res = rel_res if stop_mode == "rel" else abs_res
    best = BestIterates(z, fz)
    best_abs, best_rel, best_res = abs_res, rel_res, res
    divergence_bound = divergence_ratio * abs_res
    diverged = torch.zeros_like(abs_res, dtype=torch.bool)
    # the traces are written into rows allocated once: a small tensor kept from every iteration
    # pins the heap between the large ones freed, and the process grew by megabytes an iteration
    abs_trace = abs_res.new_empty((max_iter + 1, *abs_res.shape))
    rel_trace = rel_res.new_empty((max_iter + 1, *rel_res.shape))
    abs_trace[0], rel_trace[0] = abs_res, rel_res
    state = solver.init(z, fz, g)
    stalled = 0
    status = Status.MAX_ITER
    iteration = 0
    progress = torch.ones((), dtype=torch.bool, device=z.device)
    improved = torch.ones((), dtype=torch.bool, device=z.device)  # samples where z beat best
    while True:
        converged = best_res <= tol
        # residuals are norms, so "< inf" is False exactly for NaN and inf (one op, where
        # isfinite takes four). The absolute one: a relative residual is also infinite where
        # f(z) = 0 exactly (a ReLU cell with every unit off), which is no non-finite value
        nonfinite = ~(abs_res < math.inf)
        newly_nonfinite = nonfinite & ~diverged
        earlier = diverged
        diverged = diverged | nonfinite | (abs_res > divergence_bound)
        active = ~(converged | diverged)
        flags = torch.stack(
            [
                converged.all(),
                newly_nonfinite.any(),
                active.any(),
                progress.any(),
                improved.all(),
            ]
        ).tolist()  # the loop's one synchronization per iteration
        all_converged, any_nonfinite, any_active, progressed, all_improved = flags
        best.update(z, fz, improved, all_improved)
        stalled = 0 if progressed else stalled + 1
        # non-finite values at a non-finite iterate are divergence; at a finite one (while no
        # sample still being solved sits at a non-finite point) they are an error of fn
        if any_nonfinite and bool((torch.isfinite(z).all(dim=1) | earlier).all()):
            where = (
                describe_nonfinite(torch.where(earlier.unsqueeze(1), 0.0, fz.detach()))
                if describe_nonfinite
                else "the function returned non-finite values"
            )
            raise NonFiniteError(
                f"{where} at evaluation {f.count} (iteration {iteration}), although the point "
                "it was evaluated at is finite"
            )
        if all_converged:
            status = Status.CONVERGED
            break
        if not any_active:  # every sample that did not converge diverged
            status = Status.DIVERGED
            break
        if f.remaining <= 0:
            break
        if patience is not None and stalled >= patience:
            status = Status.STAGNATED
            break
        f.stop_at(fz, tol, stop_mode)
        step = solver.step(f, z, fz, g, state)
        z, state = step.z, step.state
        fz = step.fz if step.fz is not None else f(z)
        g, abs_res, rel_res = _residuals(z, fz)
        res = rel_res if stop_mode == "rel" else abs_res
        iteration += 1
        if iteration == len(abs_trace):  # a solver whose iterations cost no evaluation
            abs_trace, rel_trace = torch.cat([abs_trace] * 2), torch.cat([rel_trace] * 2)
        abs_trace[iteration], rel_trace[iteration] = abs_res, rel_res
        improved = res < best_res
        progress = (res < best_res * (1 - PROGRESS_FRACTION)) & active
        best_abs = torch.where(improved, abs_res, best_abs)
        best_rel = torch.where(improved, rel_res, best_rel)
        best_res = best_rel if stop_mode == "rel" else best_abs
    return LoopResult(
        z=best.z,
        fz=best.fz,
        nfe=f.count,
        abs_residual=best_abs,
        rel_residual=best_rel,
        abs_trace=abs_trace[: iteration + 1].clone(),
        rel_trace=rel_trace[: iteration + 1].clone(),
        status=status,
    )
