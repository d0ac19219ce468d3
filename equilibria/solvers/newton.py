"""Inexact Newton-Krylov on the residual F(z) = f(z) - z, with a backtracking line search."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch

from ..errors import check_choice, check_positive_int
from .base import EvaluationBudget, Solver, Step, autocast_off
from .krylov import LinearOperator, check_relative_tolerance, gmres, loop_tolerance

JVP_METHODS = ("forward", "difference")
# Eisenstat-Walker "choice 2": eta = GAMMA (||F_k|| / ||F_k-1||)^ORDER gives convergence of
# that order near the solution, and the safeguard keeps eta from dropping abruptly while the
# previous one was still large (which would solve far-from-solution models too well)
GAMMA, ORDER, SAFEGUARD = 0.9, 2.0, 0.1
ARMIJO = 1e-4  # fraction of the decrease the linear model predicts that a step must achieve


@dataclass
class NewtonState:
    norm: torch.Tensor | None = None  # (batch,) float64: ||F|| at the previous step
    eta: torch.Tensor | None = None  # (batch,) float64: the previous step's forcing term


@dataclass(frozen=True)
class Newton(Solver):
    """Newton's method on F(z) = f(z) - z, with GMRES for each linear system.

    Each step solves J_F d = -F(z), J_F = J_f(z) - I, with GMRES up to the relative residual
    eta (the Eisenstat-Walker forcing term, per sample: loose far from the solution, tighter as
    ||F|| falls, which gives quadratic convergence near it), then halves the step per sample
    until ||F(z + a d)|| <= (1 - 1e-4 a (1 - eta)) ||F(z)|| (Armijo's sufficient decrease) or
    the halvings run out (the trial with the smallest ||F|| is taken). The accepted point's f
    comes back with the step, so the loop does not evaluate it again.

    Evaluations counted per step: one per GMRES product (a Jacobian-vector product of f at z:
    forward-mode AD evaluates f once on dual numbers, a finite difference evaluates f once),
    one for the full step and one per halving; a step never asks for more than the budget has
    left, and with fewer than 2 evaluations left it is the plain step z <- f(z). A
    forward-mode product takes several evaluations' time (on CPU, 3.5 for a conv cell, 6 for
    an nn.TransformerEncoderLayer in eval mode, whose fused kernels it cannot use).

    Works on nonlinear maps from a start near enough (the line search widens that region),
    including ones whose plain iteration diverges; for an affine map, "gmres" needs no
    Jacobian-vector products.

    Args:
        k: GMRES iterations per step (memory: k + 1 basis vectors per sample).
        eta_max: forcing term of the first step and upper bound of the later ones, in [0, 1).
        max_backtracks: step halvings per line search (0: always the full Newton step).
        jvp: "forward" (forward-mode automatic differentiation: exact; every operation of f
            needs a forward-mode derivative) or "difference" ((f(z + h v) - f(z)) / h: any f,
            about half the digits of the dtype).
    """

    k: int = 10
    eta_max: float = 0.9
    max_backtracks: int = 4
    jvp: str = "forward"
    name: ClassVar[str] = "newton"

    def __post_init__(self) -> None:
        check_positive_int("Newton k", self.k)
        check_relative_tolerance("Newton eta_max", self.eta_max)
        check_positive_int("Newton max_backtracks", self.max_backtracks, minimum=0)
        check_choice("Newton jvp", self.jvp, JVP_METHODS)

    def init(self, z: torch.Tensor, fz: torch.Tensor, g: torch.Tensor) -> NewtonState:
        return NewtonState()

    def step(
        self,
        f: EvaluationBudget,
        z: torch.Tensor,
        fz: torch.Tensor,
        g: torch.Tensor,
        state: NewtonState,
    ) -> Step:
        if f.remaining < 3:  # no room for a product, a trial point and a fallback
            return Step(z=fz, fz=None, state=state)
        with autocast_off(z.device):
            norm = g.detach().norm(dim=1).double()
        eta = self._forcing_term(norm, state)
        enough = loop_tolerance(f, norm)  # no more accurate than the loop's target needs
        if enough is not None:
            eta = torch.maximum(eta, enough).clamp(max=self.eta_max)
        operator = self._residual_jacobian(f, z, fz)
        solution = gmres(operator, -g, max_iter=min(self.k, f.remaining - 2), rtol=eta)
        state = NewtonState(norm=norm, eta=eta)
        direction = solution.x
        if not bool(direction.detach().any()):  # nowhere to go: F = 0 or J_F singular on it
            return Step(z=fz, fz=None, state=state)
        # the decrease the linear model promises: 1 - eta for the eta GMRES actually reached
        promised = 1 - (solution.residual.detach() / torch.where(norm > 0, norm, 1.0)).clamp(max=1)
        backtracks = max(min(self.max_backtracks, f.remaining - 2), 0)
        z_next, fz_next, accepted = _line_search(f, z, direction, norm, promised, backtracks)
        if bool(accepted.all()):
            return Step(z=z_next, fz=fz_next, state=state)
        # where no step length decreased ||F|| enough, the Newton direction is no descent
        # direction worth taking (a Jacobian far from the local behaviour of f, as at a
        # normalization layer's zero input); those samples take the plain step z <- f(z)
        # instead, and the loop evaluates f at the new points (the evaluation kept in reserve)
        z_next = torch.where(accepted.unsqueeze(1), z_next, fz)
        return Step(z=z_next, fz=None, state=state)

    def _forcing_term(self, norm: torch.Tensor, state: NewtonState) -> torch.Tensor:
        """Per sample, the relative residual to which this step's linear system is solved."""
        if state.norm is None or state.eta is None:
            return torch.full_like(norm, self.eta_max)
        ratio = norm / torch.where(state.norm > 0, state.norm, 1.0)
        eta = GAMMA * ratio.pow(ORDER)
        floor = GAMMA * state.eta.pow(ORDER)
        eta = torch.where(floor > SAFEGUARD, torch.maximum(eta, floor), eta)
        return eta.clamp(max=self.eta_max)

    def _residual_jacobian(
        self, f: EvaluationBudget, z: torch.Tensor, fz: torch.Tensor
    ) -> LinearOperator:
        """v -> (J_F(z) v, the size of its rounding), each product counted by `f`."""
        eps = torch.finfo(z.dtype).eps
        jacobian_product = (
            _forward_product(f, z) if self.jvp == "forward" else _difference_product(f, z, fz)
        )

        def apply(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            jv, spread = jacobian_product(v.to(z.dtype))
            with autocast_off(z.device):
                product = jv.to(v.dtype) - v
                rounding = eps * (spread + v.detach().norm(dim=1).double())
            return product, rounding

        return apply


JacobianProduct = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _forward_product(f: EvaluationBudget, z: torch.Tensor) -> JacobianProduct:
    """v -> (J_f(z) v by forward-mode AD, its norm), with a way out named when f does not
    support forward mode."""

    def product(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            jv = f.jvp(z, v)
        except NotImplementedError as error:
            raise NotImplementedError(
                "Newton takes Jacobian-vector products of f by forward-mode automatic "
                f"differentiation, which an operation in f does not support ({error}); "
                'use Newton(jvp="difference") for finite differences instead'
            ) from error
        with autocast_off(z.device):
            return jv, jv.detach().norm(dim=1).double()

    return product


def _difference_product(f: EvaluationBudget, z: torch.Tensor, fz: torch.Tensor) -> JacobianProduct:
    """v -> ((f(z + h v) - f(z)) / h, the size of the terms whose difference it is) for unit v."""
    with autocast_off(z.device):
        # the usual step of a one-sided difference: about half of the digits survive
        h = math.sqrt(torch.finfo(z.dtype).eps) * z.detach().norm(dim=1, keepdim=True).clamp(min=1)
        fz_norm = fz.detach().norm(dim=1).double()

    def product(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image = f(z + h * v)
        with autocast_off(z.device):
            jv = (image - fz) / h
            return jv, (image.detach().norm(dim=1).double() + fz_norm) / h.squeeze(1).double()

    return product


def _line_search(
    f: EvaluationBudget,
    z: torch.Tensor,
    direction: torch.Tensor,
    norm: torch.Tensor,
    promised: torch.Tensor,
    backtracks: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The full step, then per-sample halvings until ||F|| decreases enough; the trial with the
    smallest ||F|| of each sample, its image, and whether it decreased ||F|| enough."""
    length = torch.ones_like(norm)

    def trial(length: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z_trial = torch.addcmul(z, length.to(z.dtype).unsqueeze(1), direction)
        fz_trial = f(z_trial)
        with autocast_off(z.device):
            trial_norm = (fz_trial.detach() - z_trial.detach()).norm(dim=1).double()
        return z_trial, fz_trial, trial_norm

    def sufficient(trial_norm: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        return trial_norm <= (1 - ARMIJO * length * promised) * norm

    best_z, best_fz, best_norm = trial(length)
    accepted = sufficient(best_norm, length)
    for _ in range(backtracks):
        if bool(accepted.all()):
            break
        length = torch.where(accepted, length, length / 2)
        z_trial, fz_trial, trial_norm = trial(length)
        # NaN compares False: a non-finite trial never wins over a finite one, and a
        # non-finite best (an overflowing full step) is replaced by any finite trial
        better = ~accepted & ((trial_norm < best_norm) | ~(best_norm < math.inf))
        best_z = torch.where(better.unsqueeze(1), z_trial, best_z)
        best_fz = torch.where(better.unsqueeze(1), fz_trial, best_fz)
        best_norm = torch.where(better, trial_norm, best_norm)
        accepted = accepted | sufficient(trial_norm, length)
    return best_z, best_fz, accepted
