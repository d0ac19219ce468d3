"""Restarted GMRES for fixed points of affine maps, such as the adjoint equation y = y J + g."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..errors import check_positive_int
from .base import EvaluationBudget, Solver, Step, autocast_off
from .krylov import LinearOperator, check_relative_tolerance, gmres, loop_tolerance


@dataclass(frozen=True)
class GMRES(Solver):
    """GMRES(restart) on (I - A) z = b for a fixed point z = f(z) = A z + b.

    One step is one restart cycle from the current z: GMRES on (I - A) d = f(z) - z with the
    products A v = (f(z + s v) - f(z)) / s (s = max(||z||, ||f(z)||) per sample: for an affine
    f the difference is exact up to rounding, and a step as large as the state loses the least
    to it), then z + d. It needs no derivatives of f, so it fits the adjoint equation of the
    implicit backward, where each evaluation is one vector-Jacobian product. With restart >=
    the number of features, one cycle solves an affine problem exactly (up to rounding).

    Evaluations counted per step: one per product (at most `restart`, never more than the
    budget leaves room for), plus the loop's evaluation at the new z; with fewer than 2 left,
    the step is the plain z <- f(z). For a non-affine f the differences only approximate
    J_f(z) v (each cycle is then a Newton step with a finite-difference Jacobian and no line
    search); use "newton" for nonlinear problems.

    Args:
        restart: products per cycle (memory: restart + 1 basis vectors per sample).
        cycle_tol: a sample's cycle ends once its residual has dropped below cycle_tol times
            the residual the cycle started from, in [0, 1); 0 runs the whole cycle (unless the
            Krylov space is exhausted first).
    """

    restart: int = 20
    cycle_tol: float = 0.0
    name: ClassVar[str] = "gmres"
    affine_only: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_positive_int("GMRES restart", self.restart)
        check_relative_tolerance("GMRES cycle_tol", self.cycle_tol)

    def step(
        self, f: EvaluationBudget, z: torch.Tensor, fz: torch.Tensor, g: torch.Tensor, state: Any
    ) -> Step:
        if f.remaining < 2:  # no room for a product and the evaluation at the new z
            return Step(z=fz, fz=None, state=state)
        operator = _fixed_point_operator(f, z, fz)
        enough = loop_tolerance(f, g.norm(dim=1))  # the cycle ends where the loop would stop
        rtol = self.cycle_tol if enough is None else enough.clamp(min=self.cycle_tol)
        cycle = gmres(operator, g, max_iter=min(self.restart, f.remaining - 1), rtol=rtol)
        return Step(z=z + cycle.x, fz=None, state=state)


def _fixed_point_operator(f: EvaluationBudget, z: torch.Tensor, fz: torch.Tensor) -> LinearOperator:
    """v -> ((I - A) v, the size of its rounding) for unit v, A v = (f(z + s v) - f(z)) / s."""
    eps = torch.finfo(z.dtype).eps
    with autocast_off(z.device):
        z_norm = z.detach().norm(dim=1, keepdim=True)
        fz_norm = fz.detach().norm(dim=1, keepdim=True)
        scale = torch.maximum(z_norm, fz_norm)
        scale = torch.where(scale > 0, scale, 1.0)  # z = f(z) = 0: the sample is solved

    def apply(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image = f(z + scale * v.to(z.dtype))
        with autocast_off(z.device):
            product = v - ((image - fz) / scale).to(v.dtype)
            # the difference of two images carries their rounding, divided by the scale
            spread = (image.detach().norm(dim=1, keepdim=True) + fz_norm) / scale
            rounding = eps * (spread.squeeze(1).double() + v.detach().norm(dim=1).double())
        return product, rounding

    return apply
