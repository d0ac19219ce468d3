"""Anderson acceleration with a bounded history and a well-conditioned least-squares step."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import torch

from ..errors import check_fraction, check_nonnegative, check_positive_int
from .base import EvaluationBudget, Solver, Step, autocast_off, output_rounding, write_slot

MIN_REG = 1e-12  # keeps the small system positive definite with reg=0


@dataclass
class AndersonState:
    dx: torch.Tensor  # (batch, m, features): differences of consecutive z + beta g
    dg: torch.Tensor  # (batch, m, features) float64: differences of consecutive residuals
    gram: torch.Tensor  # (batch, m, m) float64: dg dg^T, updated one row per step
    x_prev: torch.Tensor | None = None  # the previous z + beta g
    g_prev: torch.Tensor | None = None  # the previous residual, in float64
    stored: int = 0  # number of filled history slots
    next_slot: int = 0


@dataclass(frozen=True)
class Anderson(Solver):
    """Anderson acceleration (type II) over the last `m` steps.

    Each step solves min_gamma ||g - dG gamma||^2 + reg ||gamma||^2 over the differences dG of the
    recent residuals, then moves to z + beta g - (dZ + beta dG) gamma. The small Gram system is
    equilibrated (unit diagonal), so `reg` is relative to the size of the residuals and the step
    does not stall at tight tolerances; it is formed and solved in float64 and stays finite even
    when the history is singular (repeated or zero residual differences). Residual differences
    at round-off level (no longer than the rounding of f's output) are left out of the mix.

    Args:
        m: history length (number of past steps mixed).
        beta: mixing (damping) in (0, 1].
        reg: relative Tikhonov regularization (at least 1e-12, so that the small system stays
            positive definite); None picks 1e-10 for float64 and 1e-5 for float32.
    """

    m: int = 5
    beta: float = 1.0
    reg: float | None = None
    name: ClassVar[str] = "anderson"

    def __post_init__(self) -> None:
        check_positive_int("Anderson m", self.m)
        check_fraction("Anderson beta", self.beta)
        if self.reg is not None:
            check_nonnegative("Anderson reg", self.reg)

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
        x = torch.add(z, g, alpha=self.beta)
        with autocast_off(z.device):
            g64 = g.double()
            if state.x_prev is None:  # first step: nothing to mix yet
                return Step(z=x, fz=None, state=replace(state, x_prev=x, g_prev=g64))
            slot = state.next_slot
            dx = write_slot(state.dx, 1, slot, x - state.x_prev)
            # the residual differences are kept and multiplied in float64: with nearly
            # parallel differences, products in the state's dtype lose the small eigenvalues
            # the weights depend on. The Gram matrix gets its new row (and column) and the
            # right-hand side dg g, one batched vector-matrix product each (several times
            # faster than matrix-vector ones on CPU); unfilled slots hold zeros. Autocast is
            # off: it would run these products in bf16.
            dg_new = g64 - state.g_prev
            dg = write_slot(state.dg, 1, slot, dg_new)
            history = dg.transpose(1, 2)
            row = torch.bmm(dg_new.unsqueeze(1), history).squeeze(1)
            rhs = torch.bmm(g64.unsqueeze(1), history).squeeze(1)
            gram = write_slot(write_slot(state.gram, 1, slot, row), 2, slot, row)
            n = min(state.stored + 1, self.m)
            noise = output_rounding(fz).squeeze(1)
            gamma = self._mixing_weights(gram[:, :n, :n], rhs[:, :n], g.dtype, noise)
            z_next = torch.baddbmm(x.unsqueeze(1), gamma.unsqueeze(1), dx[:, :n], alpha=-1)
        z_next = z_next.squeeze(1)
        state = AndersonState(
            dx=dx, dg=dg, gram=gram, x_prev=x, g_prev=g64, stored=n, next_slot=(slot + 1) % self.m
        )
        return Step(z=z_next, fz=None, state=state)

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
