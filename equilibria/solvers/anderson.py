"""Anderson acceleration with a bounded history and a well-conditioned least-squares step."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import torch

from ..errors import check_fraction, check_nonnegative, check_positive_int
from .base import EvaluationBudget, Solver, Step, autocast_off, write_slot


@dataclass
class AndersonState:
    dx: torch.Tensor  # (batch, m, features): differences of consecutive z + beta g
    dg: torch.Tensor  # (batch, m, features): differences of consecutive residuals
    gram: torch.Tensor  # (batch, m, m) float64: dg dg^T, updated one row per step
    x_prev: torch.Tensor | None = None  # the previous z + beta g, and the previous residual
    g_prev: torch.Tensor | None = None
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
        reg: relative Tikhonov regularization; None picks 1e-10 for float64 and 1e-5 for float32.
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
            return self.reg
        return max(1e-10, 100 * torch.finfo(dtype).eps)

    def init(self, z: torch.Tensor, fz: torch.Tensor, g: torch.Tensor) -> AndersonState:
        batch, features = z.shape
        return AndersonState(
            dx=z.new_zeros(batch, self.m, features),
            dg=z.new_zeros(batch, self.m, features),
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
        if state.x_prev is None:  # first step: nothing to mix yet
            return Step(z=x, fz=None, state=replace(state, x_prev=x, g_prev=g))
        slot = state.next_slot
        dx = write_slot(state.dx, 1, slot, x - state.x_prev)
        dg = write_slot(state.dg, 1, slot, g - state.g_prev)
        # one product gives the Gram matrix's new row (and column) and the right-hand side
        # dg g; unfilled slots hold zeros. It is formed in float64: with nearly parallel
        # residual differences, products in the state's dtype lose the small eigenvalues the
        # weights depend on. Vectors go first: batched vector-matrix products are several times
        # faster than matrix-vector ones on CPU. Autocast is off: it would run them in bf16.
        with autocast_off(z.device):
            history = dg.double()
            vectors = torch.stack((history[:, slot], g.double()), dim=1)
            products = torch.bmm(vectors, history.transpose(1, 2))
            row = products[:, 0]
            gram = write_slot(write_slot(state.gram, 1, slot, row), 2, slot, row)
            n = min(state.stored + 1, self.m)
            noise = torch.finfo(g.dtype).eps * fz.detach().norm(dim=1)  # f's output rounding
            gamma = self._mixing_weights(gram[:, :n, :n], products[:, 1, :n], g.dtype, noise)
            z_next = torch.baddbmm(x.unsqueeze(1), gamma.unsqueeze(1), dx[:, :n], alpha=-1)
        z_next = z_next.squeeze(1)
        state = AndersonState(
            dx=dx, dg=dg, gram=gram, x_prev=x, g_prev=g, stored=n, next_slot=(slot + 1) % self.m
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
        scale = torch.where(keep, diagonal, 1.0).sqrt()
        eye = torch.eye(gram.shape[1], dtype=gram.dtype, device=gram.device)
        normalized = torch.where(
            keep.unsqueeze(2) & keep.unsqueeze(1),
            gram / (scale.unsqueeze(2) * scale.unsqueeze(1)),
            eye,
        )
        system = normalized + self._reg(dtype) * eye
        rhs = torch.where(keep, rhs / scale, 0.0)
        gamma = torch.linalg.solve(system, rhs.unsqueeze(2)).squeeze(2) / scale
        return gamma.to(dtype)
