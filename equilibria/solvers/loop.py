"""The one driver loop shared by every solver.

It owns evaluation counting, per-sample residuals, stopping, each sample's best iterate and the
non-finite checks; the solver only proposes the next iterate. The loop synchronizes with the
device once per iteration (one small tensor of flags) to decide whether to stop.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

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
) -> LoopResult:
    """Run `solver` on z = fn(z) from `z0` (a `(batch, features)` matrix).

    Stops when every sample's residual is <= tol, after `max_iter` evaluations, when no sample
    has improved for `patience` iterations, or when an absolute residual exceeds
    `divergence_ratio` times that sample's initial one. Raises NonFiniteError when fn returns
    NaN/inf at a finite point.
    `describe_nonfinite(flat)` turns a bad matrix into a "where" string for the message.
    """
    f = EvaluationBudget(fn, max_iter)
    z = z0
    fz = f(z)
    g, abs_res, rel_res = _residuals(z, fz)
    res = rel_res if stop_mode == "rel" else abs_res
    best_z, best_fz, best_abs, best_rel, best = z, fz, abs_res, rel_res, res
    divergence_bound = divergence_ratio * abs_res
    abs_trace, rel_trace = [abs_res], [rel_res]
    state = solver.init(z, fz, g)
    stalled = 0
    status = Status.MAX_ITER
    iteration = 0
    progress = torch.ones((), dtype=torch.bool, device=z.device)
    improved = torch.ones((), dtype=torch.bool, device=z.device)  # samples where z beat best
    while True:
        converged = best <= tol
        active = ~converged
        # residuals are norms, so "< inf" is False exactly for NaN and inf (one op, where
        # isfinite takes four)
        flags = torch.stack(
            [
                converged.all(),
                (res < math.inf).all(),
                ((abs_res > divergence_bound) & active).any(),
                progress.any(),
                improved.all(),
            ]
        ).tolist()  # the loop's one synchronization per iteration
        all_converged, finite, diverged, progressed, all_improved = flags
        # each sample's best iterate (and its image): z where it improved; when every sample
        # did (the usual case) that is z itself, which saves passes over the state
        if all_improved:
            best_z, best_fz = z, fz
        else:
            best_z = torch.where(improved.unsqueeze(1), z, best_z)
            best_fz = torch.where(improved.unsqueeze(1), fz, best_fz)
        nonfinite = not finite
        stalled = 0 if progressed else stalled + 1
        if nonfinite:
            if not bool(torch.isfinite(z).all()):
                status = Status.DIVERGED
                break
            where = (
                describe_nonfinite(fz.detach())
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
        if diverged:
            status = Status.DIVERGED
            break
        if f.remaining <= 0:
            break
        if patience is not None and stalled >= patience:
            status = Status.STAGNATED
            break
        step = solver.step(f, z, fz, g, state)
        z, state = step.z, step.state
        fz = step.fz if step.fz is not None else f(z)
        g, abs_res, rel_res = _residuals(z, fz)
        res = rel_res if stop_mode == "rel" else abs_res
        abs_trace.append(abs_res)
        rel_trace.append(rel_res)
        iteration += 1
        improved = res < best
        progress = (res < best * (1 - PROGRESS_FRACTION)) & active
        best_abs = torch.where(improved, abs_res, best_abs)
        best_rel = torch.where(improved, rel_res, best_rel)
        best = best_rel if stop_mode == "rel" else best_abs
    return LoopResult(
        z=best_z,
        fz=best_fz,
        nfe=f.count,
        abs_residual=best_abs,
        rel_residual=best_rel,
        abs_trace=torch.stack(abs_trace),
        rel_trace=torch.stack(rel_trace),
        status=status,
    )
