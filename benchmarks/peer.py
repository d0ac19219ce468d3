"""TorchDEQ 0.1.0 set up to solve exactly what equilibria solves (the `bench` extra).

Facts about TorchDEQ that the comparison depends on (read from its source):
- its solvers are named "fixed_point_iter", "anderson" and "broyden";
- residuals are per sample, 2-norm over the flattened state: abs ||f(z) - z||, rel
  ||f(z) - z|| / (||f(z)|| + 1e-9); equilibria uses the same norms with a tiny guard instead of
  1e-9, so a tolerance means the same in both;
- it stops when the largest current residual in the batch is below `tol`;
- the iteration caps count evaluations of f as equilibria's `max_iter` does, except Broyden's,
  which evaluates f once more than `max_iter` (f at z0, then once per step);
- `get_deq` takes its settings as loose keywords and ignores misspelt ones, so `make_deq`
  checks that every setting took effect.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

SOLVER_NAMES = {"picard": "fixed_point_iter", "anderson": "anderson", "broyden": "broyden"}
VERSION = "0.1.0"


def available() -> tuple[bool, str]:
    """Whether TorchDEQ 0.1.0 can be used here, and why not when it cannot."""
    if importlib.util.find_spec("torchdeq") is None:
        return False, "TorchDEQ is not installed (pip install -e '.[bench]' adds torchdeq==0.1.0)"
    from importlib import metadata

    version = metadata.version("torchdeq")
    if version != VERSION:
        return False, f"TorchDEQ {version} is installed; this comparison is written for {VERSION}"
    return True, ""


@dataclass(frozen=True)
class PeerSettings:
    """One TorchDEQ configuration: solver, tolerances, caps and solver keywords."""

    solver: str  # equilibria's name: "picard", "anderson" or "broyden"
    tol: float
    backward_tol: float
    stop_mode: str
    max_iter: int
    backward_max_iter: int
    solver_kwargs: dict[str, Any] = field(default_factory=dict)


def make_deq(settings: PeerSettings) -> torch.nn.Module:
    """A TorchDEQ DEQ (sliced core, implicit backward through its autograd.Function)."""
    from torchdeq import get_deq

    name = SOLVER_NAMES[settings.solver]
    deq = get_deq(
        core="sliced",
        ift=True,
        f_solver=name,
        b_solver=name,
        f_tol=settings.tol,
        b_tol=settings.backward_tol,
        f_stop_mode=settings.stop_mode,
        b_stop_mode=settings.stop_mode,
        f_max_iter=settings.max_iter,
        b_max_iter=settings.backward_max_iter,
        eval_f_max_iter=settings.max_iter,
    )
    expected = {
        "f_tol": settings.tol,
        "b_tol": settings.backward_tol,
        "f_stop_mode": settings.stop_mode,
        "b_stop_mode": settings.stop_mode,
        "f_max_iter": settings.max_iter,
        "b_max_iter": settings.backward_max_iter,
        "eval_f_max_iter": settings.max_iter,
    }
    wrong = {k: getattr(deq, k) for k, v in expected.items() if getattr(deq, k) != v}
    if wrong:
        raise RuntimeError(f"TorchDEQ did not take the settings asked for: {wrong}")
    return deq


def forward(
    deq: torch.nn.Module,
    f: Callable[[torch.Tensor], torch.Tensor],
    z0: torch.Tensor,
    solver_kwargs: dict[str, Any],
    backward_writer: Callable[[dict[str, torch.Tensor]], None] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The DEQ output (differentiable in training mode) and TorchDEQ's solver statistics.

    `backward_writer` receives the adjoint solve's statistics when backward runs.
    """
    outputs, info = deq(f, z0, solver_kwargs=dict(solver_kwargs), backward_writer=backward_writer)
    return outputs[-1], info


# `get_deq()` with nothing set, read from TorchDEQ 0.1.0's source: the sliced core, fixed-point
# iteration forward, at most 40 evaluations (40 at test time too), stopping when the largest
# absolute residual is below 1e-3, and the one-step ("phantom", tau 1) gradient instead of the
# implicit one: the output is f(z*) with autograd through that one call.
DEFAULTS = {
    "f_max_iter": 40,
    "f_tol": 1e-3,
    "f_stop_mode": "abs",
    "eval_f_max_iter": 40,
}


def default_deq() -> torch.nn.Module:
    """TorchDEQ's DEQ with every setting at its default, checked against `DEFAULTS`."""
    from torchdeq import get_deq
    from torchdeq.solver import fixed_point_iter

    deq = get_deq()
    wrong = {k: getattr(deq, k) for k, v in DEFAULTS.items() if getattr(deq, k) != v}
    if wrong or deq.f_solver is not fixed_point_iter or deq.args.get("ift", False):
        raise RuntimeError(f"TorchDEQ's defaults are not the ones this comparison expects: {wrong}")
    return deq
