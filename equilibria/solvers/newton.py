"""Inexact Newton-Krylov on the residual F(z) = f(z) - z, globalized by a line search on ||F||."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch

from ..errors import check_choice, check_positive_int
from .base import EvaluationBudget, Solver, Step, autocast_off
from .krylov import (
    KrylovResult,
    LinearOperator,
    check_relative_tolerance,
    gmres,
    loop_tolerance,
)

JVP_METHODS = ("forward", "difference")
# Eisenstat-Walker "choice 2": eta = GAMMA (||F_k|| / ||F_k-1||)^ORDER gives convergence of
# that order near the solution, and the safeguard keeps eta from dropping abruptly while the
# previous one was still large (which would solve far-from-solution models too well)
GAMMA, ORDER, SAFEGUARD = 0.9, 2.0, 0.1
ARMIJO = 1e-4  # fraction of the decrease of ||F||^2 the linear model predicts that a step needs
# a backtrack shrinks the step to the minimizer of the quadratic through ||F||^2 at 0 (value and
# slope) and at the failed length, kept within these fractions of that length
SHRINK_MIN, SHRINK_MAX = 0.1, 0.5
TIGHTEN = 0.1  # after a step that found no decrease, the next forcing term shrinks this much


@dataclass
class NewtonState:
    norm: torch.Tensor | None = None  # (batch,) float64: ||F|| at the previous step
    eta: torch.Tensor | None = None  # (batch,) float64: the previous step's forcing term
    stuck: torch.Tensor | None = None  # (batch,) bool: the previous step found no decrease
    corrections: torch.Tensor | None = None  # (batch, <= recycle, features): earlier Newton steps
    failures: torch.Tensor | None = None  # (batch,) int: steps in a row without enough decrease


@dataclass(frozen=True)
class Newton(Solver):
    """Newton's method on F(z) = f(z) - z, with GMRES for each linear system and a line search.

    Each step solves J_F d = -F(z), J_F = J_f(z) - I, with GMRES up to the relative residual
    eta (the Eisenstat-Walker forcing term, per sample: loose far from the solution, tighter
    as ||F|| falls, which gives superlinear convergence near it). The first GMRES cycle
    searches along the corrections of the last `recycle` steps before the Krylov vectors (as
    LGMRES does: on a nearly linear F they hold the directions a short Krylov space misses);
    further cycles of `k` products restart from the cycle's answer until eta is met or
    `cycles` have run.

    The line search works on ||F||^2, whose slope along d is exactly -2 (||F||^2 - r^2) for
    the GMRES residual r, so d descends wherever GMRES made progress. It tries the full step,
    then per sample shrinks the step length a to the minimizer of the quadratic model
    (safeguarded to [0.1 a, 0.5 a]) until ||F(z + a d)||^2 <= ||F||^2 - 2e-4 a (||F||^2 - r^2)
    (Armijo's sufficient decrease) or the backtracks run out. A sample then takes its trial
    with the smallest ||F|| if that is below ||F(z)||, and otherwise stays where it is and
    solves its next linear system ten times more accurately. A sample whose line search has
    found no sufficient decrease `jump_after` steps in a row sits near a local minimum of ||F||
    that is no root (the Newton direction barely descends there): it takes the full Newton
    step, its residual whatever it is (a nonmonotone step, as plain Newton would; SciPy's
    newton_krylov takes it whenever its line search fails). No sample ever takes the plain
    step z <- f(z), which runs away from a fixed point that repels it. The accepted point's f
    comes back with the step, so the loop does not evaluate it again.

    Evaluations counted per step: one per GMRES product (a Jacobian-vector product of f at z:
    forward-mode AD evaluates f once on dual numbers, a finite difference evaluates f once,
    and each restarted cycle takes one for its starting residual), and one per trial point; a
    step never asks for more than the budget has left. A forward-mode product takes several
    evaluations' time (on CPU, 3.5 for a conv cell, 6 for an nn.TransformerEncoderLayer in
    eval mode, whose fused kernels it cannot use).

    Works on nonlinear maps from a start near enough (the line search widens that region),
    including ones whose plain iteration diverges; for an affine map, "gmres" needs no
    Jacobian-vector products.

    Args:
        k: Krylov products per GMRES cycle (memory: k + 1 basis vectors per sample).
        recycle: earlier corrections searched first in each step's GMRES (memory: as many
            vectors per sample; 0 turns recycling off).
        cycles: GMRES cycles per step at most (restarts until the forcing term is met).
        eta_max: forcing term of the first step and upper bound of the later ones, in [0, 1).
        max_backtracks: step reductions per line search (0: only the full Newton step).
        jump_after: failed line searches in a row after which a sample takes the full Newton
            step (0: never).
        jvp: "forward" (forward-mode automatic differentiation: exact; every operation of f
            needs a forward-mode derivative) or "difference" ((f(z + h v) - f(z)) / h: any f,
            about half the digits of the dtype).
    """

    k: int = 40
    recycle: int = 5
    cycles: int = 3
    eta_max: float = 0.5
    max_backtracks: int = 4
    jump_after: int = 2
    jvp: str = "forward"
    name: ClassVar[str] = "newton"

    def __post_init__(self) -> None:
        check_positive_int("Newton k", self.k)
        check_positive_int("Newton recycle", self.recycle, minimum=0)
        check_positive_int("Newton cycles", self.cycles)
        check_relative_tolerance("Newton eta_max", self.eta_max)
        check_positive_int("Newton max_backtracks", self.max_backtracks, minimum=0)
        check_positive_int("Newton jump_after", self.jump_after, minimum=0)
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
        if f.remaining < 2:  # no room for a product and a trial point: z stays
            return Step(z=z, fz=fz, state=state) if f.remaining < 1 else Step(z, None, state)
        with autocast_off(z.device):
            norm = g.detach().norm(dim=1).double()
        eta = self._forcing_term(norm, state)
        enough = loop_tolerance(f, norm)  # no more accurate than the loop's target needs
        if enough is not None:
            eta = torch.maximum(eta, enough).clamp(max=self.eta_max)
        operator = self._residual_jacobian(f, z, fz)
        solution = self._solve(f, operator, -g, eta, state.corrections)
        direction = solution.x
        with autocast_off(z.device):
            # the slope of ||F||^2 along the direction, halved: r^2 - ||F||^2 (GMRES' residual
            # is orthogonal to J_F times its search space, which holds the direction)
            slope = solution.residual.square() - norm.square()
        backtracks = max(min(self.max_backtracks, f.remaining - 1), 0)
        search = _line_search(f, z, fz, direction, norm, slope, backtracks)
        z_next, fz_next, moved = search.z, search.fz, search.moved
        failures = torch.where(search.sufficient, 0, _previous(state.failures, norm) + 1)
        if self.jump_after:
            # a sample whose line searches keep failing sits near a local minimum of ||F|| that
            # is no root: it takes the full Newton step, whatever its residual (nonmonotone)
            jump = (failures >= self.jump_after) & torch.isfinite(search.full_norm)
            z_next = torch.where(jump.unsqueeze(1), search.full_z, z_next)
            fz_next = torch.where(jump.unsqueeze(1), search.full_fz, fz_next)
            moved = moved | jump
            failures = torch.where(jump, 0, failures)
        state = NewtonState(
            norm=norm,
            eta=eta,
            stuck=~moved,
            corrections=self._kept(state, direction, moved),
            failures=failures,
        )
        return Step(z=z_next, fz=fz_next, state=state)

    def _solve(
        self,
        f: EvaluationBudget,
        operator: LinearOperator,
        b: torch.Tensor,
        eta: torch.Tensor,
        corrections: torch.Tensor | None,
    ) -> KrylovResult:
        """GMRES on J_F d = b to relative residual eta: a first cycle that searches the earlier
        corrections, then restarted cycles while some sample misses eta and the budget (one
        evaluation kept for the trial point) allows."""
        room = f.remaining - 1
        searched = 0 if corrections is None else corrections.shape[1]
        solution = gmres(
            operator, b, max_iter=min(searched + self.k, room), rtol=eta, augment=corrections
        )
        used, cycles = solution.products, 1
        with autocast_off(b.device):
            target = eta * b.detach().norm(dim=1).double()
        while cycles < self.cycles and room - used >= 2:
            if not bool((solution.residual > target).any()):
                break
            restarted = gmres(
                operator, b, max_iter=min(self.k, room - used - 1), rtol=eta, x0=solution.x
            )
            used, cycles = used + restarted.products, cycles + 1
            if not bool((restarted.residual < solution.residual).any()):
                break  # the cycle gained nothing: a further one would not either
            better = restarted.residual < solution.residual
            solution = KrylovResult(
                x=torch.where(better.unsqueeze(1), restarted.x, solution.x),
                residual=torch.where(better, restarted.residual, solution.residual),
                products=used,
            )
        return KrylovResult(x=solution.x, residual=solution.residual, products=used)

    def _kept(
        self, state: NewtonState, direction: torch.Tensor, moved: torch.Tensor
    ) -> torch.Tensor | None:
        """The corrections the next step searches first: this step's (zero where the sample
        did not move), then the most recent earlier ones."""
        if self.recycle == 0:
            return None
        latest = torch.where(moved.unsqueeze(1), direction.detach(), 0.0).unsqueeze(1)
        if state.corrections is None:
            return latest
        return torch.cat([latest, state.corrections[:, : self.recycle - 1]], dim=1)

    def _forcing_term(self, norm: torch.Tensor, state: NewtonState) -> torch.Tensor:
        """Per sample, the relative residual to which this step's linear system is solved."""
        if state.norm is None or state.eta is None:
            return torch.full_like(norm, self.eta_max)
        ratio = norm / torch.where(state.norm > 0, state.norm, 1.0)
        eta = GAMMA * ratio.pow(ORDER)
        floor = GAMMA * state.eta.pow(ORDER)
        eta = torch.where(floor > SAFEGUARD, torch.maximum(eta, floor), eta)
        if state.stuck is not None:  # no decrease along the last direction: a better one
            eta = torch.where(state.stuck, TIGHTEN * state.eta, eta)
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


def _previous(failures: torch.Tensor | None, norm: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(norm, dtype=torch.long) if failures is None else failures


@dataclass
class Search:
    """A line search's outcome per sample: the point taken and its image, whether it moved
    and decreased ||F||^2 enough, and the full step's trial (its norm inf where none was
    tried)."""

    z: torch.Tensor
    fz: torch.Tensor
    moved: torch.Tensor
    sufficient: torch.Tensor
    full_z: torch.Tensor
    full_fz: torch.Tensor
    full_norm: torch.Tensor


def _line_search(
    f: EvaluationBudget,
    z: torch.Tensor,
    fz: torch.Tensor,
    direction: torch.Tensor,
    norm: torch.Tensor,
    slope: torch.Tensor,
    backtracks: int,
) -> Search:
    """Per sample: the full step, then steps shortened by safeguarded quadratic interpolation
    of ||F||^2 until it decreases enough. Returns each sample's new point (its trial with the
    smallest ||F||, or z where no trial decreased ||F||), its image, and whether it moved.

    `slope` is half the derivative of ||F(z + a d)||^2 at a = 0 (negative along a descent
    direction)."""
    value = norm.square()
    length = torch.ones_like(norm)
    descent = slope < 0
    best_z, best_fz, best_norm = z, fz, norm
    done = ~descent  # a sample without a descent direction tries nothing
    sufficient = torch.zeros_like(descent)
    full_z, full_fz, full_norm = z, fz, torch.full_like(norm, math.inf)
    for trial in range(backtracks + 1):
        if bool(done.all()):
            break
        z_trial = torch.addcmul(z, length.to(z.dtype).unsqueeze(1), direction)
        fz_trial = f(z_trial)
        with autocast_off(z.device):
            trial_norm = (fz_trial.detach() - z_trial.detach()).norm(dim=1).double()
        # NaN compares False: a non-finite trial never wins
        better = ~done & (trial_norm < best_norm)
        best_z = torch.where(better.unsqueeze(1), z_trial, best_z)
        best_fz = torch.where(better.unsqueeze(1), fz_trial, best_fz)
        best_norm = torch.where(better, trial_norm, best_norm)
        if trial == 0:
            full_z, full_fz = z_trial, fz_trial
            full_norm = torch.where(done, math.inf, trial_norm)
        trial_value = trial_norm.square()
        enough = ~done & (trial_value <= value + 2 * ARMIJO * length * slope)
        sufficient = sufficient | enough
        done = done | enough
        # the minimizer of the quadratic with value and slope at 0 and the trial's value
        curvature = trial_value - value - 2 * slope * length
        shrunk = -slope * length.square() / torch.where(curvature > 0, curvature, 1.0)
        shrunk = torch.where((curvature > 0) & (trial_value < math.inf), shrunk, 0.0)
        length = torch.where(
            done, length, shrunk.clamp(min=SHRINK_MIN * length, max=SHRINK_MAX * length)
        )
    return Search(best_z, best_fz, best_norm < norm, sufficient, full_z, full_fz, full_norm)
