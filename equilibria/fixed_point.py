"""The fixed-point search: its settings, checked once, and one solve of z = f(z) of any state
structure through the shared solver loop."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .errors import (
    ConvergenceWarning,
    NotConvergedError,
    UnsupportedError,
    check_choice,
    check_nonnegative,
    check_positive_int,
    warn_at_caller,
)
from .solution import Solution, Status
from .solvers import Solver, make_solver
from .solvers.loop import iterate
from .state import State, StateLayout, check_finite

STOP_MODES = ("rel", "abs")
ON_FAILURE = ("warn", "raise", "ignore")


@dataclass(frozen=True)
class SolveSettings:
    """Everything that decides how a fixed point is searched for, checked on construction.

    Attributes:
        solver: the solver object (hyperparameters included).
        tol: stop once every sample's residual is <= tol.
        max_iter: the most evaluations of f a solve may use (>= 1).
        stop_mode: "rel" (||f(z) - z|| / ||f(z)||) or "abs" (||f(z) - z||).
        patience: stop after this many iterations without progress (None: never).
        divergence_ratio: a sample whose absolute residual exceeds this multiple of its initial
            value has diverged and stops counting; the solve stops (DIVERGED) once every sample
            that has not converged has diverged. math.inf turns the guard off (as SciPy's
            solvers have none); a non-finite residual still counts as divergence.
        on_failure: what a solve that misses `tol` does: "warn", "raise" or "ignore".
    """

    solver: Solver
    tol: float = 1e-4
    max_iter: int = 50
    stop_mode: str = "rel"
    patience: int | None = 20
    divergence_ratio: float = 1e4
    on_failure: str = "warn"

    def __post_init__(self) -> None:
        if not isinstance(self.solver, Solver):
            raise TypeError(f"solver must be a Solver object, got {type(self.solver).__name__}")
        object.__setattr__(self, "tol", check_nonnegative("tol", self.tol))
        check_positive_int("max_iter", self.max_iter)
        check_choice("stop_mode", self.stop_mode, STOP_MODES)
        if self.patience is not None:
            check_positive_int("patience", self.patience)
        ratio = self.divergence_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not ratio > 1:
            raise ValueError(
                f"divergence_ratio must be a number > 1 (math.inf: never give up on a sample), "
                f"got {ratio!r}"
            )
        check_choice("on_failure", self.on_failure, ON_FAILURE)

    @classmethod
    def create(
        cls,
        solver: str | Solver = "anderson",
        *,
        owner: str = "solve()",
        solver_options: dict[str, Any] | None = None,
        **settings: Any,
    ) -> SolveSettings:
        """Settings from a solver name or object, the loop settings and solver hyperparameters."""
        solver = make_solver(solver, solver_options, owner=owner, other_keywords=settings_fields())
        return cls(solver=solver, **settings)

    def updated(self, **changes: Any) -> SolveSettings:
        """A copy with some fields changed (None values are ignored); `solver` may be a name."""
        changes = {k: v for k, v in changes.items() if v is not None}
        if isinstance(changes.get("solver"), str):
            changes["solver"] = make_solver(changes["solver"])
        return dataclasses.replace(self, **changes)


def settings_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(SolveSettings)]


def find_fixed_point(
    f: Callable[[State], State], z0: State, settings: SolveSettings, *, what: str = "f"
) -> Solution:
    """One solve of z = f(z) with prepared settings, under the caller's grad mode.

    No gradient strategy is attached here (see `equilibria.solve`); `what` names f in error
    messages (e.g. "the cell").
    """
    refuse_vmap()
    layout = StateLayout.of(z0, "z0")
    check_finite(z0, "z0")
    if layout.batch == 0:  # nothing to solve: converged, without evaluating f
        return empty_solution(z0, settings)
    first_call = True

    def flat_f(flat: torch.Tensor) -> torch.Tensor:
        nonlocal first_call
        out = f(layout.unflatten(flat))
        if first_call:
            layout.check_same(out, f"the output of {what}")
            first_call = False
        return layout.flatten(out)

    def locate(flat: torch.Tensor) -> str:
        return f"the output of {what} holds " + layout.locate_nonfinite(flat)

    result = iterate(
        settings.solver,
        flat_f,
        layout.flatten(z0),
        tol=settings.tol,
        max_iter=settings.max_iter,
        stop_mode=settings.stop_mode,
        patience=settings.patience,
        divergence_ratio=settings.divergence_ratio,
        describe_nonfinite=locate,
        splitting=getattr(f, "splitting", None),  # monotone cells' maps carry one
    )
    residual = result.rel_residual if settings.stop_mode == "rel" else result.abs_residual
    solution = Solution(
        z=layout.unflatten(result.z),
        nfe=result.nfe,
        converged=residual <= settings.tol,
        abs_residual=result.abs_residual,
        rel_residual=result.rel_residual,
        abs_trace=result.abs_trace,
        rel_trace=result.rel_trace,
        status=result.status,
        tol=settings.tol,
        stop_mode=settings.stop_mode,
        solver=settings.solver.name,
        fz=layout.unflatten(result.fz),
    )
    report_failure(solution, settings.on_failure, what)
    return solution


def empty_solution(z0: State, settings: SolveSettings) -> Solution:
    """The solution of a batch of no samples: z0 itself, converged after 0 evaluations."""
    first = StateLayout.of(z0, "z0")
    none = torch.zeros(0, dtype=first.dtype, device=first.device)
    return Solution(
        z=z0,
        nfe=0,
        converged=torch.zeros(0, dtype=torch.bool, device=first.device),
        abs_residual=none,
        rel_residual=none.clone(),
        abs_trace=none.reshape(1, 0),
        rel_trace=none.reshape(1, 0).clone(),
        status=Status.CONVERGED,
        tol=settings.tol,
        stop_mode=settings.stop_mode,
        solver=settings.solver.name,
        fz=z0,
    )


def functorch_transform() -> str | None:
    """The innermost `torch.func` transform running now ("vmap", "grad", "jvp", ...), or None."""
    functorch = getattr(torch._C, "_functorch", None)
    peek = getattr(functorch, "peek_interpreter_stack", None)
    top = peek() if peek is not None else None
    return None if top is None else top.key().name.lower()


def refuse_vmap() -> None:
    """Raise a clear error inside `torch.func.vmap`, which cannot run a solve."""
    if functorch_transform() == "vmap":
        raise UnsupportedError(
            "torch.func.vmap cannot run a fixed-point solve: when to stop depends on the "
            "residuals' values, which vmap cannot trace. Solves are already batched: stack the "
            "problems along the first dimension of z0 (each sample is solved independently)"
        )


def report_failure(solution: Solution, on_failure: str, what: str) -> None:
    """Warn about or raise on a solve that missed its tolerance, as `on_failure` asks."""
    if solution.status == Status.CONVERGED or on_failure == "ignore":
        return
    text = f"solve of {what} did not converge: {solution.message}; returning the best iterate"
    if on_failure == "raise":
        raise NotConvergedError(text)
    warn_at_caller(text, ConvergenceWarning)
