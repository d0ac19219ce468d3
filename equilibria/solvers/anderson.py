"""Anderson acceleration with a bounded history and a well-conditioned least-squares step."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import torch

from ..errors import check_fraction, check_nonnegative, check_positive_int
from .base import EvaluationBudget, Solver, Step, autocast_off, write_slot
from .safeguard import NOISE_ULPS, check_growth, guarded_step

MIN_REG = 1e-12  # keeps the small system positive definite with reg=0


@dataclass
class AndersonState:
    dx: torch.Tensor  # (batch, m, features): differences of consecutive z + beta g
    dg: torch.Tensor  # (batch, m, features) float64: differences of consecutive residuals
    gram: torch.Tensor  # (batch, m, m) float64: dg dg^T, updated one row per step
    rhs: torch.Tensor  # (batch, m) float64: dg g_prev, the right-hand side at the last step
    x_prev: torch.Tensor | None = None  # the previous z + beta g
    g_prev: torch.Tensor | None = None  # the previous residual, in float64
    stored: int = 0  # number of filled history slots
    next_slot: int = 0
    # (batch, 1) per-sample factor on beta once the safeguard has shortened a step; None before
    scale: torch.Tensor | None = None
    best: torch.Tensor | None = None  # (batch, 1) least residual norm seen, for the safeguard


@dataclass(frozen=True)
class Anderson(Solver):
    """Anderson acceleration (type II) over the last `m` steps.

    Each step solves min_gamma ||g - dG gamma||^2 + reg ||gamma||^2 over the differences dG of the
    recent residuals, then moves to z + beta g - (dZ + beta dG) gamma. The small Gram system is
    equilibrated (unit diagonal), so `reg` is relative to the size of the residuals and the step
    does not stall at tight tolerances; it is formed and solved in float64 and stays finite even
    when the history is singular (repeated or zero residual differences). Residual differences
    at round-off level (no longer than the rounding of f's output) are left out of the mix.

    Safeguard: f is evaluated at each proposed point (the evaluation the next step needs
    anyway); where the residual exceeds `max_growth` times the least one seen, the step is
    retried shorter (see `equilibria.solvers.safeguard`), that sample's history restarts and
    its beta is scaled by the fraction of the step taken, for the rest of the solve. A first
    step z + g that overshoots (a residual large against the scale of z) recovers, as SciPy's
    choice of alpha from the first step does, and so does an iteration drifting away from a
    root; on DEQ cells no step grows that much and the safeguard costs nothing.

    Args:
        m: history length (number of past steps mixed).
        beta: mixing (damping) in (0, 1].
        reg: relative Tikhonov regularization (at least 1e-12, so that the small system stays
            positive definite); None picks 1e-10 for float64 and 1e-5 for float32.
        max_growth: a step's residual may exceed the least one seen by at most this factor
            before the step is shortened; None turns the safeguard off.
        max_retries: shortened trials per step (each one evaluation of f).
    """

    m: int = 5
    beta: float = 1.0
    reg: float | None = None
    max_growth: float | None = 30.0
    max_retries: int = 20
    name: ClassVar[str] = "anderson"

    def __post_init__(self) -> None:
        check_positive_int("Anderson m", self.m)
        check_fraction("Anderson beta", self.beta)
        if self.reg is not None:
            check_nonnegative("Anderson reg", self.reg)
        check_growth("Anderson max_growth", self.max_growth)
        check_positive_int("Anderson max_retries", self.max_retries, minimum=0)

    def _reg(self, dtype: torch.dtype) -> float:
        if self.reg is not None:
            return max(self.reg, MIN_REG)
        return max(1e-10, 100 * torch.finfo(dtype).eps)

    def init(self, z: torch.Tensor, fz: torch.Tensor, g: torch.Tensor) -> AndersonState:
        batch, features = z.shape
        return AndersonState(
            dx=z.new_zeros(batch, self.m, features),
            dg=z.new_zeros(batch, self.m, features, dtype=torch.float64),
            gram=z.new_zeros(batch, self.m, self.m, dtype=torch.float64),
            rhs=z.new_zeros(batch, self.m, dtype=torch.float64),
        )

    def step(
        self,
        f: EvaluationBudget,
        z: torch.Tensor,
        fz: torch.Tensor,
        g: torch.Tensor,
        state: AndersonState,
    ) -> Step:
        # the plain (damped) step x = z + beta g; the history keeps differences of x, so that
        # z + beta g - (dz + beta dg) gamma = x - dx gamma is one product with one buffer
        x = self._plain_step(z, g, state.scale)
        if state.x_prev is None:  # first step: nothing to mix yet
            return self._guard(f, z, fz, g, x, replace(state, x_prev=x, g_prev=g.double()))
        with autocast_off(z.device):
            g64 = g.double()
            slot = state.next_slot
            dx = write_slot(state.dx, 1, slot, x - state.x_prev)
            # the residual differences are kept and multiplied in float64: with nearly
            # parallel differences, products in the state's dtype lose the small eigenvalues
            # the weights depend on. Reading that history is most of the step's memory traffic,
            # so it is read once: the Gram matrix gets its new row (and column) dg dg_new from
            # one batched vector-matrix product (several times faster than a matrix-vector one
            # on CPU), and the right-hand side follows from it, dg g = dg g_prev + dg dg_new
            # (g = g_prev + dg_new), except in the new slot, which is one dot product. Unfilled
            # slots hold zeros. Autocast is off: it would run these products in bf16.
            dg_new = g64 - state.g_prev
            dg = write_slot(state.dg, 1, slot, dg_new)
            row = torch.bmm(dg_new.unsqueeze(1), dg.transpose(1, 2)).squeeze(1)
            rhs = write_slot(state.rhs + row, 1, slot, torch.linalg.vecdot(dg_new, g64))
            gram = write_slot(write_slot(state.gram, 1, slot, row), 2, slot, row)
            n = min(state.stored + 1, self.m)
            noise = f.image_rounding(fz)
            gamma = self._mixing_weights(gram[:, :n, :n], rhs[:, :n], g.dtype, noise)
            z_next = torch.baddbmm(x.unsqueeze(1), gamma.unsqueeze(1), dx[:, :n], alpha=-1)
        z_next = z_next.squeeze(1)
        state = AndersonState(
            dx=dx, dg=dg, gram=gram, rhs=rhs, x_prev=x, g_prev=g64, stored=n,
            next_slot=(slot + 1) % self.m, scale=state.scale, best=state.best,
        )  # fmt: skip
        return self._guard(f, z, fz, g, z_next, state)

    def _plain_step(self, z: torch.Tensor, g: torch.Tensor, scale: torch.Tensor | None):
        """z + beta g, with beta scaled per sample once the safeguard has shortened a step."""
        if scale is None:
            return torch.add(z, g, alpha=self.beta)
        return z + (self.beta * scale) * g

    def _guard(
        self,
        f: EvaluationBudget,
        z: torch.Tensor,
        fz: torch.Tensor,
        g: torch.Tensor,
        z_next: torch.Tensor,
        state: AndersonState,
    ) -> Step:
        """The step to z_next through the safeguard; where it was shortened, that sample's
        beta shrinks by the fraction taken and its history restarts from z."""
        if self.max_growth is None or f.remaining < 1:  # off, or no evaluation left to judge
            return Step(z=z_next, fz=None, state=state)
        start = f.residual_norm(g, fz).unsqueeze(1)  # the loop's: no pass over the state
        best = start if state.best is None else torch.minimum(start, state.best)
        state.best = best
        rounding = f.image_rounding(fz).to(best.dtype).unsqueeze(1)
        bound = torch.maximum(self.max_growth * best, NOISE_ULPS * rounding)
        guarded = guarded_step(f, z, z_next, start, bound, self.max_retries)
        if not guarded.retried:
            return Step(z=guarded.z, fz=guarded.fz, state=state)
        scale = guarded.fraction if state.scale is None else state.scale * guarded.fraction
        restart = guarded.shortened
        rows = restart.unsqueeze(2)
        state = replace(
            state,
            dx=torch.where(rows, 0.0, state.dx),
            dg=torch.where(rows, 0.0, state.dg),
            gram=torch.where(rows, 0.0, state.gram),
            rhs=torch.where(restart, 0.0, state.rhs),
            x_prev=torch.where(restart, self._plain_step(z, g, scale), state.x_prev),
            scale=scale,
        )
        return Step(z=guarded.z, fz=guarded.fz, state=state)

    def _mixing_weights(
        self, gram: torch.Tensor, rhs: torch.Tensor, dtype: torch.dtype, noise: torch.Tensor
    ) -> torch.Tensor:
        """gamma minimizing ||g - dg^T gamma||^2 + reg ||D gamma||^2, D the column norms.

        `gram` is dg dg^T and `rhs` is dg g (float64), for the filled history slots; the weights
        come back in `dtype`. Columns no longer than `noise` (per sample: residual differences
        at round-off level, zero ones included) carry no information and would give unbounded
        weights; they get weight 0.
        """
        diagonal = torch.diagonal(gram, dim1=1, dim2=2)
        keep = diagonal > noise.double().square().unsqueeze(1)
        # 1 / column norm where kept, 0 where dropped: a dropped column's row and column of
        # the equilibrated system vanish, and with its diagonal entry it gets weight 0
        inverse = torch.where(keep, diagonal.rsqrt(), 0.0)
        system = gram * inverse.unsqueeze(2) * inverse.unsqueeze(1)
        system.diagonal(dim1=1, dim2=2).fill_(1 + self._reg(dtype))  # unit diagonal, plus reg
        # symmetric positive definite (an equilibrated Gram matrix plus reg I, reg > 0):
        # Cholesky, which costs half of a general solve and never synchronizes
        factor, _ = torch.linalg.cholesky_ex(system)
        gamma = torch.cholesky_solve((rhs * inverse).unsqueeze(2), factor).squeeze(2) * inverse
        return gamma.to(dtype)
