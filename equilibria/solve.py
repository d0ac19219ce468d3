"""The functional API: `solve(f, z0, ...)` finds a fixed point z = f(z) of any state structure,
optionally with the gradient of a backward strategy, the same mechanism the DEQ layer uses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .backward import Backward, FlatMap, make_backward
from .errors import UnsupportedError
from .fixed_point import SolveSettings, find_fixed_point, functorch_transform
from .solution import Solution
from .solvers import Solver
from .state import State, StateLayout


def solve(
    f: Callable[[State], State],
    z0: State,
    solver: str | Solver = "anderson",
    *,
    tol: float = 1e-4,
    max_iter: int = 50,
    stop_mode: str = "rel",
    patience: int | None = 20,
    divergence_ratio: float = 1e4,
    on_failure: str = "warn",
    backward: str | Backward | None = None,
    **solver_options: Any,
) -> Solution:
    """Find a fixed point z = f(z) starting from `z0`.

    `z0` is a batch-first tensor or a tuple/list of them; `f` must return the same structure.
    `solver` is a name ("picard", "anderson", "broyden", "newton"; "gmres" for affine f) or a
    solver object such as `eq.Anderson(m=6)`; extra keywords are that named solver's
    hyperparameters.
    Returns a `Solution`; a solve that misses `tol` warns (or raises, or stays silent, per
    `on_failure`) and returns each sample's best iterate.

    Gradients: with `backward=None` the solve runs under the caller's grad mode, so autograd
    records every iteration. With a backward strategy (`"implicit"`, `eq.Implicit(...)`,
    `eq.Phantom(...)`, `eq.OneStep()`, `eq.Unrolled()`, `eq.Reversible(...)`, as for `eq.DEQ`),
    the solve runs without autograd and `solution.z` (the same values) carries that strategy's
    gradient to every tensor f closes over (module parameters and plain tensors alike); after
    backward, `solution.backward` holds the adjoint solve of an implicit strategy. The
    reversible strategy runs its own iteration instead of `solver` and returns its last state.

    Example:
        >>> sol = solve(torch.cos, torch.zeros(4, 1), tol=1e-6, stop_mode="abs")
        >>> round(float(sol.z[0]), 6), sol.status.value
        (0.739085, 'converged')
        >>> a = torch.tensor([0.5], requires_grad=True)
        >>> sol = solve(lambda z: a * torch.cos(z), torch.zeros(1, 1), backward="implicit")
        >>> sol.z.sum().backward()  # a.grad: dz*/da = cos z* / (1 + a sin z*)
    """
    settings = SolveSettings.create(
        solver,
        solver_options=solver_options,
        tol=tol,
        max_iter=max_iter,
        stop_mode=stop_mode,
        patience=patience,
        divergence_ratio=divergence_ratio,
        on_failure=on_failure,
    )
    return solve_with(f, z0, settings, backward=backward)


def solve_with(
    f: Callable[[State], State],
    z0: State,
    settings: SolveSettings,
    *,
    backward: str | Backward | None = None,
    what: str = "f",
) -> Solution:
    """`solve` with prepared settings; `what` names f in error messages (e.g. "the cell")."""
    if backward is None:
        return find_fixed_point(f, z0, settings, what=what)
    solution, out = solve_differentiably(f, z0, settings, make_backward(backward), what=what)
    if out is not solution.fz:  # the gradient's path: z* in value, the strategy's gradient
        layout = StateLayout.of(z0, "z0")
        z_star, wired = layout.flatten(solution.z).detach(), layout.flatten(out)
        solution.z = layout.unflatten(z_star + (wired - wired.detach()))
    return solution


def solve_differentiably(
    f: Callable[[State], State],
    z0: State,
    settings: SolveSettings,
    backward: Backward,
    *,
    what: str = "f",
    through: FlatMap | None = None,
    backward_defaults: SolveSettings | None = None,
) -> tuple[Solution, State]:
    """The one mechanism behind `solve(..., backward=...)` and `eq.DEQ`: the solution and f(z*).

    The solve runs without autograd unless `backward` differentiates the solver. Under grad
    mode, f(z*) is one more application of f (or of `through`, the same map on flat
    `(batch, features)` matrices, for callers that watch that application), wired for the
    strategy's gradient, which records its adjoint solve on the returned solution. Without
    grad mode it is the solve's own last image, at no extra evaluation. An adjoint solve takes
    its unset values from `backward_defaults` (default: `settings`).
    """
    refuse_implicit_under_functorch(backward)
    if backward.owns_forward:  # its forward is its own iteration, not the configured solver
        return backward.solve(f, z0, settings, what=what, through=through)
    layout = StateLayout.of(z0, "z0")
    grad = torch.is_grad_enabled()
    with torch.set_grad_enabled(grad and backward.differentiates_solver):
        solution = find_fixed_point(f, z0, settings, what=what)
    if not (backward.solves_adjoint or backward.differentiates_solver):
        solution.backward_nfe = 0
    if not grad:
        return solution, solution.fz
    if through is None:

        def through(flat: torch.Tensor) -> torch.Tensor:
            return layout.flatten(f(layout.unflatten(flat)))

        through.splitting = getattr(f, "splitting", None)  # type: ignore[attr-defined]

    z_star = layout.flatten(solution.z)
    defaults = settings if backward_defaults is None else backward_defaults
    out = backward.attach(through, z_star, defaults, solution.record_backward)
    return solution, layout.unflatten(out)


def refuse_implicit_under_functorch(backward: Backward) -> None:
    """Raise a clear error when an adjoint solve would run inside a `torch.func` transform.

    The implicit backward solves its adjoint equation in a tensor hook with
    `torch.autograd.grad`, neither of which functorch transforms support. The other strategies
    are ordinary autograd and work under `torch.func.grad`/`jacrev`.
    """
    transform = functorch_transform()
    if backward.solves_adjoint and transform not in (None, "vmap"):  # vmap: the solve refuses
        raise UnsupportedError(
            f"the implicit backward cannot run inside torch.func.{transform}: it "
            "solves its adjoint equation with torch.autograd.grad in a tensor hook, which "
            "functorch transforms do not support; take implicit gradients with "
            "loss.backward() or torch.autograd.grad, or use backward=eq.Unrolled(), "
            "eq.Phantom() or eq.OneStep() under torch.func"
        )
