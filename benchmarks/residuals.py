"""Residual curves indexed by true NFE: the best relative residual after every evaluation of f.

A safeguard's or line search's extra evaluations count like any other, so curves of different
solvers compare at equal cost.
"""

from __future__ import annotations

from typing import Any

import torch

import equilibria as eq
from equilibria.state import StateLayout


def relative_residual(z: Any, fz: Any) -> torch.Tensor:
    """||f(z) - z|| / ||f(z)|| per sample, for a state of any structure and its image."""
    layout = StateLayout.of(z)
    flat_z, flat_fz = layout.flatten(z), layout.flatten(fz)
    return (flat_fz - flat_z).norm(dim=1) / flat_fz.norm(dim=1).clamp_min(1e-30)


def best_residuals(deq: eq.DEQ, x: torch.Tensor, z0: Any, solver: Any, cap: int) -> torch.Tensor:
    """(cap, batch): each sample's best relative residual after 1 .. cap cell evaluations.

    Every evaluation the solve makes is recorded (a safeguard's extra ones too), so the curve
    is indexed by true NFE, not by solver iterations.
    """
    seen: list[torch.Tensor] = []

    def cell(z):
        fz = deq.cell(z, x)
        seen.append(relative_residual(z, fz))
        return fz

    with torch.no_grad():
        eq.solve(cell, z0, solver, tol=0.0, max_iter=cap, patience=None, on_failure="ignore")
    residuals = torch.stack(seen).cummin(dim=0).values
    if len(residuals) < cap:  # stopped early (a non-finite iterate): hold the last value
        residuals = torch.cat([residuals, residuals[-1:].expand(cap - len(residuals), -1)])
    return residuals


def evaluations_to(residuals: torch.Tensor, target: float) -> torch.Tensor:
    """Per sample: the first NFE (1-based) at which the best residual is <= target (inf: never)."""
    reached = residuals <= target
    first = reached.float().argmax(dim=0) + 1.0
    return torch.where(reached.any(dim=0), first, torch.full_like(first, float("inf")))
