"""Good Broyden's method on g(z) = f(z) - z with a bounded low-rank history."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..errors import check_positive_int
from .base import EvaluationBudget, Solver, Step, autocast_off, output_rounding, write_slot
from .safeguard import NOISE_ULPS, check_growth, guarded_step

# a first step (with the guess -I) whose residual stays above this fraction of the initial one
# overshot or went astray; the initial guess then takes the first secant pair's scale, shrunk
# at most to SHORTEST_SCALE (one pair is a rough estimate of the Jacobian's scale)
STALLED, SHORTEST_SCALE = 0.99, 0.5


@dataclass
class BroydenState:
    # inverse-Jacobian estimate H = -scale I + sum_i u_i v_i^T over the stored slots
    u: torch.Tensor  # (batch, memory, features)
    v: torch.Tensor  # (batch, memory, features)
    z_prev: torch.Tensor | None = None
    g_prev: torch.Tensor | None = None
    hg_prev: torch.Tensor | None = None  # H g_prev with the H that took the previous step
    stored: int = 0
    # (batch, 1) per-sample scale of the initial guess once the safeguard shortened a step
    scale: torch.Tensor | None = None

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """H x."""
        return _low_rank_minus_identity(self.u, self.v, self.stored, x, self.scale)

    def apply_transposed(self, x: torch.Tensor) -> torch.Tensor:
        """H^T x."""
        return _low_rank_minus_identity(self.v, self.u, self.stored, x, self.scale)

    def minus_initial(self, x: torch.Tensor) -> torch.Tensor:
        """-H0 x: x, or scale x once the safeguard has scaled the initial guess."""
        return x if self.scale is None else self.scale * x


def _low_rank_minus_identity(
    left: torch.Tensor, right: torch.Tensor, n: int, x: torch.Tensor, scale: torch.Tensor | None
) -> torch.Tensor:
    """-scale x + sum_i left_i (right_i^T x) over the first `n` slots, per sample (scale None:
    1).

    Written with x as a row vector, (x^T right^T) left: batched vector-matrix products are
    several times faster than matrix-vector ones on CPU, and the sum is one fused baddbmm.
    """
    if n == 0:
        return -x if scale is None else -scale * x
    row = x.unsqueeze(1)
    coeff = torch.bmm(row, right[:, :n].transpose(1, 2))
    if scale is None:
        return torch.baddbmm(row, coeff, left[:, :n], beta=-1).squeeze(1)
    return torch.baddbmm((-scale * x).unsqueeze(1), coeff, left[:, :n]).squeeze(1)


@dataclass(frozen=True)
class Broyden(Solver):
    """Good Broyden's method with a limited memory of rank-1 updates.

    The inverse Jacobian of g(z) = f(z) - z starts at -I and receives one rank-1 update per step;
    after `memory` updates the estimate restarts from -I (dropping only the oldest update would
    leave an inconsistent estimate that diverges), so memory stays at 2 x memory state copies
    however many iterations run.

    Safeguard: f is evaluated at the first proposed point z + g (the evaluation the next step
    needs anyway); where its residual is over `max_growth` times the initial one, the step is
    retried shorter (see `equilibria.solvers.safeguard`) and that sample's initial guess
    becomes -t I, t the fraction of the step taken, the role of SciPy's alpha. Later steps are
    not judged (without `line_search`): Broyden's residual often climbs for a few steps on the
    way to a DEQ cell's fixed point. Where the full first step leaves over 99% of the residual,
    the initial guess becomes -t I before the first update, t the first secant pair's step
    length (dz . dg / dg . dg, the Shanno-Phua scaling) kept within [0.5, 1]: Broyden's
    tridiagonal function's first step merely reflects the residual, and with -I the later
    steps run away.

    Args:
        memory: number of rank-1 updates kept.
        line_search: every step must decrease the residual; a step that does not is retried
            shorter, per sample (each trial one evaluation of f).
        max_backtracks: shorter trials per step when `line_search` is on.
        max_growth: the first step may multiply the residual by at most this much before it is
            shortened; None turns that safeguard off.
        max_retries: shorter trials for the first step (with or without `line_search`).
        secant_scale: scale the initial guess after a first step that leaves the residual
            nearly as large (see above).
    """

    memory: int = 30
    line_search: bool = False
    max_backtracks: int = 3
    max_growth: float | None = 3.0
    max_retries: int = 20
    secant_scale: bool = True
    name: ClassVar[str] = "broyden"

    def __post_init__(self) -> None:
        check_positive_int("Broyden memory", self.memory)
        check_positive_int("Broyden max_backtracks", self.max_backtracks, minimum=0)
        check_growth("Broyden max_growth", self.max_growth)
        check_positive_int("Broyden max_retries", self.max_retries, minimum=0)

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
                dz, dg = z - state.z_prev, g - state.g_prev
                if state.stored == 0 and self.secant_scale:
                    _scale_initial_guess(state, dz, dg)
                state, hg = self._update(state, dz, dg, g, fz)
        state.z_prev, state.g_prev, state.hg_prev = z, g, hg
        direction = -hg
        if state.stored == 0:  # the first step: H is still the initial guess -scale I
            growth = 1.0 if self.line_search else self.max_growth
            if growth is not None:
                return self._guard(f, z, fz, g, z + direction, state, growth, self.max_retries)
        if self.line_search:  # every step must decrease the residual
            return self._guard(f, z, fz, g, z + direction, state, 1.0, self.max_backtracks)
        return Step(z=z + direction, fz=None, state=state)

    def _guard(
        self,
        f: EvaluationBudget,
        z: torch.Tensor,
        fz: torch.Tensor,
        g: torch.Tensor,
        z_next: torch.Tensor,
        state: BroydenState,
        growth: float,
        retries: int,
    ) -> Step:
        """The step to z_next, shortened where the residual exceeds `growth` times the one at z
        (see `equilibria.solvers.safeguard`). A step shortened while H is still the initial
        guess scales that guess by the fraction taken, as a first step sets SciPy's alpha."""
        if f.remaining < 1:  # no evaluation left to judge the step with
            return Step(z=z_next, fz=None, state=state)
        start = g.norm(dim=1, keepdim=True)
        rounding = f.image_rounding(fz).to(start.dtype).unsqueeze(1)  # the loop's measurement
        bound = torch.maximum(growth * start, NOISE_ULPS * rounding)
        guarded = guarded_step(f, z, z_next, start, bound, retries)
        if guarded.retried and state.stored == 0:
            scale = guarded.fraction if state.scale is None else state.scale * guarded.fraction
            state.scale, state.hg_prev = scale, -scale * g
        return Step(z=guarded.z, fz=guarded.fz, state=state)

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
        if slot == 0 and state.stored:  # restart: H = -scale I
            v, h_dg, hg = (
                -state.minus_initial(dz),
                -state.minus_initial(dg),
                -state.minus_initial(g),
            )
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
            scale=state.scale,
        )
        return updated, hg + u * (v * g).sum(dim=1, keepdim=True)


def _scale_initial_guess(state: BroydenState, dz: torch.Tensor, dg: torch.Tensor) -> None:
    """Before the first update, per sample whose full first step removed less than
    1 - STALLED of the residual: shrink the initial guess -I to -t I, t = -(dz . dg) / (dg . dg)
    (the Shanno-Phua scaling: the step length minimizing the first secant pair's linear model
    of ||g|| along the step), kept within [SHORTEST_SCALE, 1]. Samples whose first step the
    safeguard shortened keep the fraction it found."""
    full = state.minus_initial(torch.ones_like(dz[:, :1])) == 1
    start = state.g_prev.norm(dim=1, keepdim=True)
    stalled = (state.g_prev + dg).norm(dim=1, keepdim=True) > STALLED * start
    secant = -(dz * dg).sum(dim=1, keepdim=True) / (dg * dg).sum(dim=1, keepdim=True)
    shrink = full & stalled & (secant > 0) & (secant < 1)  # False for NaN
    if not bool(shrink.any()):
        return
    scale = torch.where(shrink, secant.clamp(min=SHORTEST_SCALE), 1.0)
    if state.scale is not None:
        scale = torch.where(full, scale, state.scale)
    state.scale, state.hg_prev = scale, -scale * state.g_prev
