"""Pretraining: the cell applied a fixed number of times as an explicit weight-tied network.

Early in training a DEQ's cell can be far from a contraction, so its solve is slow or unstable.
The papers train f first as an ordinary unrolled network (z_{k+1} = f(z_k, x), k = 0..depth-1,
plain backpropagation) for a number of steps, then switch to the equilibrium solve.
`eq.DEQ(..., pretrain=eq.Pretrain(depth, steps))` does this for its first `steps` training calls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import check_positive_int
from ..fixed_point import SolveSettings
from ..solution import Solution, Status
from ..state import State, StateLayout, check_finite


@dataclass(frozen=True)
class Pretrain:
    """Settings of the unrolled pretraining phase.

    Attributes:
        depth: cell applications in the unrolled network (>= 1).
        steps: training calls (forward passes in training mode with autograd on) that run
            unrolled before the layer switches to the equilibrium solve (>= 0).
    """

    depth: int
    steps: int

    def __post_init__(self) -> None:
        check_positive_int("Pretrain depth", self.depth)
        check_positive_int("Pretrain steps", self.steps, minimum=0)


def unroll(
    cell_of: Callable[[State], State],
    z0: State,
    depth: int,
    settings: SolveSettings,
) -> tuple[State, Solution]:
    """Apply `cell_of` `depth` times from `z0` under autograd; return the last state and a record.

    The record's residuals are those of the last input, ||f(z) - z|| with f(z) the returned state,
    and its trace holds one row per application; `nfe` is `depth`.
    """
    layout = StateLayout.of(z0, "z0")
    check_finite(z0, "z0")
    z, abs_trace, rel_trace = z0, [], []
    for k in range(depth):
        fz = cell_of(z)
        if k == 0:
            layout.check_same(fz, "the output of the cell")
        with torch.no_grad():
            flat_fz = layout.flatten(fz)
            abs_res = (flat_fz - layout.flatten(z)).norm(dim=1)
            rel_res = abs_res / (flat_fz.norm(dim=1) + torch.finfo(flat_fz.dtype).tiny)
        abs_trace.append(abs_res)
        rel_trace.append(rel_res)
        z = fz
    check_finite(z, f"the output of the cell after {depth} unrolled pretraining steps")
    residual = rel_trace[-1] if settings.stop_mode == "rel" else abs_trace[-1]
    converged = residual <= settings.tol
    record = Solution(
        z=z.detach() if isinstance(z, torch.Tensor) else type(z)(p.detach() for p in z),
        nfe=depth,
        converged=converged,
        abs_residual=abs_trace[-1],
        rel_residual=rel_trace[-1],
        abs_trace=torch.stack(abs_trace),
        rel_trace=torch.stack(rel_trace),
        status=Status.CONVERGED if bool(converged.all()) else Status.MAX_ITER,
        tol=settings.tol,
        stop_mode=settings.stop_mode,
        solver="unrolled pretraining",
    )
    return z, record
