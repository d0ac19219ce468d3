"""Good Broyden's method on g(z) = f(z) - z with a bounded low-rank history."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..errors import check_positive_int
from .base import EvaluationBudget, Solver, Step, autocast_off, output_rounding, write_slot


@dataclass
class BroydenState:
    # inverse-Jacobian estimate H = -I + sum_i u_i v_i^T over the stored slots
    u: torch.Tensor  # (batch, memory, features)
    v: torch.Tensor  # (batch, memory, features)
    z_prev: torch.Tensor | None = None
    g_prev: torch.Tensor | None = None
    hg_prev: torch.Tensor | None = None  # H g_prev with the H that took the previous step
    stored: int = 0

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """H x."""
        return _low_rank_minus_identity(self.u, self.v, self.stored, x)

    def apply_transposed(self, x: torch.Tensor) -> torch.Tensor:
        """H^T x."""
        return _low_rank_minus_identity(self.v, self.u, self.stored, x)


def _low_rank_minus_identity(
    left: torch.Tensor, right: torch.Tensor, n: int, x: torch.Tensor
) -> torch.Tensor:
    """(-I + sum_i left_i right_i^T) x over the first `n` slots, per sample.

    Written with x as a row vector, (x^T right^T) left: batched vector-matrix products are
    several times faster than matrix-vector ones on CPU, and the sum is one fused baddbmm.
    """
    if n == 0:
        return -x
    row = x.unsqueeze(1)
    coeff = torch.bmm(row, right[:, :n].transpose(1, 2))
    return torch.baddbmm(row, coeff, left[:, :n], beta=-1).squeeze(1)


@dataclass(frozen=True)
class Broyden(Solver):
    """Good Broyden's method with a limited memory of rank-1 updates.

    The inverse Jacobian of g(z) = f(z) - z starts at -I and receives one rank-1 update per step;
    after `memory` updates the estimate restarts from -I (dropping only the oldest update would
    leave an inconsistent estimate that diverges), so memory stays at 2 x memory state copies
    however many iterations run.

    Args:
        memory: number of rank-1 updates kept.
        line_search: backtrack (halving the step, per sample) when a full step would increase
            the residual; each trial costs one evaluation of f.
        max_backtracks: trials after the full step when `line_search` is on.
    """

    memory: int = 30
    line_search: bool = False
    max_backtracks: int = 3
    name: ClassVar[str] = "broyden"

    def __post_init__(self) -> None:
        check_positive_int("Broyden memory", self.memory)
        check_positive_int("Broyden max_backtracks", self.max_backtracks, minimum=0)

    def init(self, z: torch.Tensor, fz: torch.Tensor, g: torch.Tensor) -> BroydenState:
        batch, features = z.shape
        return BroydenState(
            u=z.new_zeros(batch, self.memory, features),
            v=z.new_zeros(batch, self.memory, features),
        )

    def step(
        self,
        f: EvaluationBudget,
        z: torch.Tensor,
        fz: torch.Tensor,
        g: torch.Tensor,
        state: BroydenState,
    ) -> Step:
        with autocast_off(z.device):  # under bf16 autocast the products would run in bf16
            if state.z_prev is None:
                hg = state.apply(g)
            else:
                state, hg = self._update(state, z - state.z_prev, g - state.g_prev, g, fz)
        state.z_prev, state.g_prev, state.hg_prev = z, g, hg
        direction = -hg
        if not self.line_search or f.remaining < 2:
            return Step(z=z + direction, fz=None, state=state)
        z_next, fz_next = _backtrack(f, z, g, direction, min(self.max_backtracks, f.remaining - 1))
        return Step(z=z_next, fz=fz_next, state=state)

    def _update(
        self,
        state: BroydenState,
        dz: torch.Tensor,
        dg: torch.Tensor,
        g: torch.Tensor,
        fz: torch.Tensor,
    ) -> tuple[BroydenState, torch.Tensor]:
        """H <- H + (dz - H dg) (dz^T H) / (dz^T H dg), stored as one (u, v) pair; with it the
        updated H g.

        A full history restarts from H = -I, and the pair is then computed against -I, so that
        every update satisfies the secant condition H dg = dz. Otherwise H dg = H g - H g_prev
        comes from products already computed, so a step applies the low-rank H twice (H g and
        H^T dz), not three times. A pair is skipped when it carries no information: its
        denominator is at round-off level (dz nearly orthogonal to H dg, relative to the dtype's
        epsilon), or dg is no longer than the rounding of f's output; either would give an
        update of noise amplified without bound.
        """
        slot = state.stored % self.memory
        if slot == 0 and state.stored:  # restart: H = -I
            v, h_dg, hg = -dz, -dg, -g
        else:
            hg = state.apply(g)
            v, h_dg = state.apply_transposed(dz), hg - state.hg_prev
        denominator = (v * dg).sum(dim=1, keepdim=True)
        eps = torch.finfo(dz.dtype).eps
        dg_norm = dg.norm(dim=1, keepdim=True)
        usable = (denominator.abs() > eps * v.norm(dim=1, keepdim=True) * dg_norm) & (
            dg_norm > output_rounding(fz)
        )
        safe = torch.where(usable, denominator, 1.0)
        u = torch.where(usable, (dz - h_dg) / safe, 0.0)
        updated = BroydenState(
            u=write_slot(state.u, 1, slot, u),
            v=write_slot(state.v, 1, slot, v),
            stored=slot + 1,
        )
        return updated, hg + u * (v * g).sum(dim=1, keepdim=True)


def _backtrack(
    f: EvaluationBudget, z: torch.Tensor, g: torch.Tensor, direction: torch.Tensor, backtracks: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample halving of the step until the residual norm decreases (or trials run out)."""
    norm0 = g.norm(dim=1, keepdim=True)
    alpha = torch.ones_like(norm0)
    accepted = torch.zeros_like(norm0, dtype=torch.bool)
    z_best = z_trial = z + direction
    fz_best = f(z_trial)
    for _ in range(backtracks):
        accepted = accepted | ((fz_best - z_best).norm(dim=1, keepdim=True) < norm0)
        if bool(accepted.all()):
            break
        alpha = torch.where(accepted, alpha, alpha / 2)
        z_trial = z + alpha * direction
        fz_trial = f(z_trial)
        z_best = torch.where(accepted, z_best, z_trial)
        fz_best = torch.where(accepted, fz_best, fz_trial)
    return z_best, fz_best
