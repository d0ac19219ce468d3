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

import numpy as np
import torch
from torch.linalg import vector_norm

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


def _residuals(z: torch.Tensor, fz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """g = f(z) - z and, per sample, ||g|| and ||f(z)|| stacked as a (2, batch) matrix."""
    g = fz - z
    with torch.no_grad():
        norms = torch.stack([vector_norm(g, dim=1), vector_norm(fz, dim=1)])
    return g, norms


class SampleBook:
    """Per-sample bookkeeping on the host: residuals, best residuals, divergence, traces.

    The loop moves each iteration's two residual norms per sample to the host in its one
    synchronization and decides everything per sample there: a few dozen tiny device
    operations an iteration cost more than the state's own arithmetic on small states.
    """

    def __init__(
        self, norms: torch.Tensor, *, tol: float, stop_mode: str, divergence_ratio: float,
        max_iter: int,
    ) -> None:  # fmt: skip
        self.dtype, self.device = norms.dtype, norms.device
        self.tiny = torch.finfo(norms.dtype).tiny
        self.tol, self.rel_mode = tol, stop_mode == "rel"
        abs_res, rel_res = self._read(norms)
        self.abs_res, self.rel_res = abs_res, rel_res
        self.best_abs, self.best_rel = abs_res, rel_res
        with np.errstate(invalid="ignore"):  # math.inf x 0 (a start at its fixed point)
            self.bound = np.where(abs_res > 0, divergence_ratio * abs_res, math.inf)
        self.diverged = np.zeros(abs_res.shape, dtype=bool)
        self.active = np.ones(abs_res.shape, dtype=bool)
        self.improved = np.ones(abs_res.shape, dtype=bool)
        self.progress = True
        self.abs_trace = np.empty((max_iter + 1, *abs_res.shape))
        self.rel_trace = np.empty_like(self.abs_trace)
        self.abs_trace[0], self.rel_trace[0] = abs_res, rel_res
        self.iteration = 0

    def _read(self, norms: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Absolute and relative residuals per sample as float64 arrays (the synchronization)."""
        try:
            host = norms.detach().cpu().numpy()
        except RuntimeError:  # a tensor inside a torch.func transform has no storage to read
            host = np.array(norms.tolist())
        abs_res, fz_norm = host.astype(np.float64)
        # the division in the state's dtype, as the residual is reported in it
        with np.errstate(invalid="ignore", over="ignore"):  # inf / inf: a non-finite sample
            rel_res = (abs_res / (fz_norm + self.tiny)).astype(_numpy_dtype(self.dtype))
        return abs_res, rel_res.astype(np.float64)

    @property
    def best(self) -> np.ndarray:
        return self.best_rel if self.rel_mode else self.best_abs

    def record(self, norms: torch.Tensor) -> None:
        """Take in the residuals of a new iterate."""
        self.abs_res, self.rel_res = self._read(norms)
        self.iteration += 1
        if self.iteration == len(self.abs_trace):  # a solver whose steps cost no evaluation
            self.abs_trace = np.concatenate([self.abs_trace] * 2)
            self.rel_trace = np.concatenate([self.rel_trace] * 2)
        self.abs_trace[self.iteration] = self.abs_res
        self.rel_trace[self.iteration] = self.rel_res
        res = self.rel_res if self.rel_mode else self.abs_res
        best = self.best
        self.improved = res < best
        self.progress = bool(((res < best * (1 - PROGRESS_FRACTION)) & self.active).any())
        self.best_abs = np.where(self.improved, self.abs_res, self.best_abs)
        self.best_rel = np.where(self.improved, self.rel_res, self.best_rel)

    def classify(self) -> tuple[np.ndarray, np.ndarray]:
        """Update divergence and activity; the samples that converged and the ones whose
        residual just became non-finite."""
        converged = self.best <= self.tol
        # "< inf" is False exactly for NaN and inf. The absolute residual: a relative one is
        # also infinite where f(z) = 0 exactly (a ReLU cell with every unit off)
        nonfinite = ~(self.abs_res < math.inf)
        newly_nonfinite = nonfinite & ~self.diverged
        self.diverged = self.diverged | nonfinite | (self.abs_res > self.bound)
        self.active = ~(converged | self.diverged)
        return converged, newly_nonfinite

    def tensor(self, values: np.ndarray) -> torch.Tensor:
        """`values` in the residuals' dtype and device (converted on the host: no float64
        copy on the device)."""
        if self.dtype in (torch.float32, torch.float64, torch.float16):
            host = torch.from_numpy(np.ascontiguousarray(values, dtype=_numpy_dtype(self.dtype)))
            return host.to(self.device)
        return torch.as_tensor(values, device=self.device).to(self.dtype)


def _numpy_dtype(dtype: torch.dtype) -> Any:
    """The NumPy dtype of a floating torch dtype (float32 for the ones NumPy lacks)."""
    return {torch.float64: np.float64, torch.float16: np.float16}.get(dtype, np.float32)


class BestIterates:
    """Each sample's best iterate and its image so far.

    On CPU without autograd (the usual forward solve) nothing is copied while samples improve:
    the best of a sample that improved is the latest iterate, held by reference. Only when a
    sample stops improving are its rows of the previous iterate (its best) copied into buffers
    this object owns, so a step copies the rows of the samples that just regressed, not of
    every sample that improved; the result is assembled once, at the end. On accelerators
    (where a row index would cost a synchronization and a masked pass is cheap) and under
    autograd (which must trace the selection), each step selects with one masked pass.
    """

    def __init__(self, z: torch.Tensor, fz: torch.Tensor) -> None:
        self._latest = (z, fz)
        self._best = (z, fz)  # the masked-pass mode's running best
        self._buffers: tuple[torch.Tensor, torch.Tensor] | None = None
        self._current = np.ones(z.shape[0], dtype=bool)  # best = the latest iterate
        self._copying = z.device.type == "cpu"

    def update(self, z: torch.Tensor, fz: torch.Tensor, improved: np.ndarray) -> None:
        """Take in the new iterate; `improved` says, per sample, whether it beat the best."""
        previous = self._latest
        self._latest = (z, fz)
        tracing = torch.is_grad_enabled() and any(
            t.requires_grad for t in (z, fz, *previous, *self._best)
        )
        if tracing or not self._copying:
            self._copying = False
            if improved.all():
                self._best = (z, fz)
            else:
                mask = torch.from_numpy(improved).to(z.device, non_blocking=True).unsqueeze(1)
                best_z, best_fz = self._best
                self._best = (torch.where(mask, z, best_z), torch.where(mask, fz, best_fz))
            return
        regressed = self._current & ~improved
        if regressed.any():  # their best is the previous iterate: keep its rows
            if self._buffers is None:
                self._buffers = (torch.empty_like(z), torch.empty_like(fz))
            rows = torch.from_numpy(np.flatnonzero(regressed))
            for buffer, source in zip(self._buffers, previous, strict=True):
                buffer.index_copy_(0, rows, source.index_select(0, rows))
        self._current = improved.copy()

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each sample's best iterate and its image."""
        if not self._copying:
            return self._best
        if self._current.all() or self._buffers is None:
            return self._latest
        rows = torch.from_numpy(np.flatnonzero(self._current))
        for buffer, source in zip(self._buffers, self._latest, strict=True):
            buffer.index_copy_(0, rows, source.index_select(0, rows))
        return self._buffers


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
    g, norms = _residuals(z, fz)
    book = SampleBook(
        norms, tol=tol, stop_mode=stop_mode, divergence_ratio=divergence_ratio, max_iter=max_iter
    )
    best = BestIterates(z, fz)
    state = solver.init(z, fz, g)
    stalled = 0
    status = Status.MAX_ITER
    while True:
        earlier = book.diverged
        converged, newly_nonfinite = book.classify()
        best.update(z, fz, book.improved)
        stalled = 0 if book.progress else stalled + 1
        # non-finite values at a non-finite iterate are divergence; at a finite one (while no
        # sample still being solved sits at a non-finite point) they are an error of fn. A
        # residual norm that overflows while f's values are finite is divergence too
        if (
            newly_nonfinite.any()
            and bool((torch.isfinite(z).all(dim=1).cpu().numpy() | earlier).all())
            and not bool(torch.isfinite(fz).all())
        ):
            solving = torch.from_numpy(~earlier).to(z.device).unsqueeze(1)
            where = (
                describe_nonfinite(torch.where(solving, fz.detach(), 0.0))
                if describe_nonfinite
                else "the function returned non-finite values"
            )
            raise NonFiniteError(
                f"{where} at evaluation {f.count} (iteration {book.iteration}), although the "
                "point it was evaluated at is finite"
            )
        if converged.all():
            status = Status.CONVERGED
            break
        if not book.active.any():  # every sample that did not converge diverged
            status = Status.DIVERGED
            break
        if f.remaining <= 0:
            break
        if patience is not None and stalled >= patience:
            status = Status.STAGNATED
            break
        f.stop_at(fz, tol, stop_mode, norms)
        step = solver.step(f, z, fz, g, state)
        z, state = step.z, step.state
        fz = step.fz if step.fz is not None else f(z)
        g, norms = _residuals(z, fz)
        book.record(norms)
    end = book.iteration + 1
    best_z, best_fz = best.result()
    return LoopResult(
        z=best_z,
        fz=best_fz,
        nfe=f.count,
        abs_residual=book.tensor(book.best_abs),
        rel_residual=book.tensor(book.best_rel),
        abs_trace=book.tensor(book.abs_trace[:end]),
        rel_trace=book.tensor(book.rel_trace[:end]),
        status=status,
    )
