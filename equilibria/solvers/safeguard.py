"""A safeguard for quasi-Newton steps: a step that blows the residual up is shortened.

Anderson and Broyden start from the Jacobian guess -I (a plain fixed-point step), which suits
DEQ cells but can overshoot by orders of magnitude on equations whose residual is large or
steep. The safeguard evaluates f at the proposed point and, per sample, accepts it when its
residual is at most `max_growth` times the reference residual; otherwise it retries along the
same direction with a shorter step (each retry one evaluation of f, on the whole batch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .base import EvaluationBudget

# each retry shortens the step by a factor in this range: the minimizer of a quadratic model
# of ||g||^2 along the step, kept away from both ends (a classic backtracking safeguard)
SHORTEST_FACTOR, LONGEST_FACTOR = 0.1, 0.5
NOISE_ULPS = 100  # a residual below this many roundings of f's output is never rejected


@dataclass(frozen=True)
class Guarded:
    """The accepted point, its image, and per sample the fraction of the step taken."""

    z: torch.Tensor
    fz: torch.Tensor
    fraction: torch.Tensor  # (batch, 1): 1 where the full step was accepted
    shortened: torch.Tensor  # (batch, 1) bool: where the step was shortened
    retried: bool  # whether any shorter trial was evaluated (False: `shortened` is all False)


def guarded_step(
    f: EvaluationBudget,
    z: torch.Tensor,
    proposal: torch.Tensor,
    start: torch.Tensor,
    bound: torch.Tensor,
    max_retries: int,
) -> Guarded:
    """The proposed point where ||g(proposal)|| <= bound, else z + t (proposal - z), t < 1.

    `start` (batch, 1) is ||g(z)||, `bound` (batch, 1) the largest residual accepted. A sample
    whose retries all fail keeps its trial of least residual. Retries stop when the evaluation
    budget runs out.
    """
    fraction = torch.ones_like(start)
    z_kept = z_trial = proposal
    fz_kept = fz_trial = f(z_trial)
    residual = _residual_norm(z_trial, fz_trial)
    kept_residual, kept_fraction = residual, fraction
    accepted = residual <= bound  # False for NaN
    retried = False
    for _ in range(min(max_retries, f.remaining)):
        if bool(accepted.all()):
            break
        if not retried:
            direction, retried = proposal - z, True
        fraction = fraction * _shortening(start, residual)
        z_trial = z + fraction * direction
        fz_trial = f(z_trial)
        residual = _residual_norm(z_trial, fz_trial)
        take = ~accepted & ((residual <= bound) | (residual < kept_residual))
        z_kept = torch.where(take, z_trial, z_kept)
        fz_kept = torch.where(take, fz_trial, fz_kept)
        kept_residual = torch.where(take, residual, kept_residual)
        kept_fraction = torch.where(take, fraction, kept_fraction)
        accepted = accepted | (residual <= bound)
    return Guarded(z_kept, fz_kept, kept_fraction, kept_fraction < 1, retried)


def check_growth(name: str, value: float | None) -> None:
    """A growth bound is None (no safeguard) or a number above 1."""
    if value is not None and not (isinstance(value, (int, float)) and 1 < value < math.inf):
        raise ValueError(f"{name} must be None or a finite number > 1, got {value!r}")


def _residual_norm(z: torch.Tensor, fz: torch.Tensor) -> torch.Tensor:
    """||f(z) - z|| per sample, (batch, 1), with non-finite values as inf."""
    norm = (fz - z).norm(dim=1, keepdim=True)
    return torch.where(norm < torch.inf, norm, torch.inf)


def _shortening(start: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """The factor for the next trial: phi(0) / (phi(0) + phi(1)), the minimizer of the
    quadratic model of phi(t) = ||g(z + t d)||^2 with slope -2 phi(0) at 0 (a Newton-like
    direction), applied to the last trial, clamped to [SHORTEST_FACTOR, LONGEST_FACTOR]."""
    phi0, phi = start.square(), residual.square()
    factor = phi0 / (phi0 + phi)  # 0 for an infinite residual
    return factor.nan_to_num(SHORTEST_FACTOR).clamp(SHORTEST_FACTOR, LONGEST_FACTOR)
