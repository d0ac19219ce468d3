"""The DEQ layer: an nn.Module whose output is the fixed point of a cell."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .backward import Backward, make_backward
from .solution import Solution
from .solve import SolveSettings, solve_with
from .solvers import Solver
from .stability.dropout import masks_held
from .stability.normalization import parametrizations_cached
from .state import State, StateLayout, check_finite


@dataclass
class DEQStats:
    """Statistics of the last DEQ call.

    Attributes:
        forward: the forward solve's `Solution` (residuals, trace, status).
        backward: the adjoint solve's `Solution` once backward has run with `Implicit`.
        backward_nfe: evaluations of the adjoint solve (None until backward has run; 0 for
            strategies without an adjoint solve).
    """

    forward: Solution
    backward: Solution | None = None
    backward_nfe: int | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def forward_nfe(self) -> int:
        return self.forward.nfe

    @property
    def converged(self) -> torch.Tensor:
        return self.forward.converged

    @property
    def abs_residual(self) -> torch.Tensor:
        return self.forward.abs_residual

    @property
    def rel_residual(self) -> torch.Tensor:
        return self.forward.rel_residual

    def record_backward(self, solution: Solution) -> None:
        self.backward = solution
        self.backward_nfe = solution.nfe


class DEQ(nn.Module):
    """A deep equilibrium layer: returns z* with z* = cell(z*, x).

    `cell(z, x)` is an nn.Module returning the same structure as `z` (a tensor or a tuple/list of
    tensors). The fixed point is found without autograd by `solver`; gradients w.r.t. `x` and
    the cell's parameters come from `backward` ("implicit", "phantom", "onestep", "unrolled", or
    an object such as `eq.Implicit(tol=1e-6)`). The output is one differentiable application
    f(z*), and statistics of the last call are on `deq.stats`.

    Args:
        cell: the layer f(z, x).
        solver: solver name or object; extra keywords are the named solver's hyperparameters.
        tol, max_iter, stop_mode, patience, divergence_ratio, on_failure: see `SolveSettings`.
        backward: the backward strategy.
        eval_solver, eval_tol, eval_max_iter: replacements used in `eval()` mode.
        check_input: raise on non-finite input (costs one synchronization per call).

    Example:
        >>> cell = eq.testing.TanhCell(8)              # doctest: +SKIP
        >>> deq = eq.DEQ(cell, solver="anderson", tol=1e-5, eval_max_iter=100)
        >>> z = deq(torch.randn(16, 8)); deq.stats.forward_nfe
    """

    def __init__(
        self,
        cell: nn.Module,
        solver: str | Solver = "anderson",
        *,
        tol: float = 1e-4,
        max_iter: int = 50,
        stop_mode: str = "rel",
        backward: str | Backward = "implicit",
        patience: int | None = 20,
        divergence_ratio: float = 1e4,
        on_failure: str = "warn",
        eval_solver: str | Solver | None = None,
        eval_tol: float | None = None,
        eval_max_iter: int | None = None,
        check_input: bool = True,
        **solver_options: Any,
    ) -> None:
        super().__init__()
        if not isinstance(cell, nn.Module):
            raise TypeError(f"cell must be an nn.Module, got {type(cell).__name__}")
        self.cell = cell
        self.train_settings = SolveSettings.create(
            solver,
            owner="DEQ()",
            solver_options=solver_options,
            tol=tol,
            max_iter=max_iter,
            stop_mode=stop_mode,
            patience=patience,
            divergence_ratio=divergence_ratio,
            on_failure=on_failure,
        )
        self.eval_settings = self.train_settings.updated(
            solver=eval_solver, tol=eval_tol, max_iter=eval_max_iter
        )
        self.backward = make_backward(backward)
        self.check_input = check_input
        self.stats: DEQStats | None = None

    @property
    def settings(self) -> SolveSettings:
        """The solve settings in force for the current mode (train or eval)."""
        return self.train_settings if self.training else self.eval_settings

    def initial_state(self, x: Any) -> State:
        """`cell.init_state(x)` when the cell defines it, else zeros like `x`."""
        init = getattr(self.cell, "init_state", None)
        if callable(init):
            return init(x)
        if not isinstance(x, torch.Tensor):
            raise TypeError(
                "z0 was not given and the input is not a tensor, so the initial state is "
                "unknown: pass z0 or define init_state(x) on the cell"
            )
        return torch.zeros_like(x)

    def forward(
        self,
        x: Any,
        z0: State | None = None,
        *,
        solver: str | Solver | None = None,
        tol: float | None = None,
        max_iter: int | None = None,
        on_failure: str | None = None,
    ) -> State:
        """The fixed point for input `x`; the keywords override the settings for this call."""
        if self.check_input:
            check_finite(x if isinstance(x, (tuple, list)) else (x,), "the DEQ input")
        settings = self.settings.updated(
            solver=solver, tol=tol, max_iter=max_iter, on_failure=on_failure
        )
        z0 = self.initial_state(x) if z0 is None else z0
        # normalized weights are computed once and dropout masks drawn once for the whole call
        with parametrizations_cached(self.cell), masks_held(self.cell):
            return self._equilibrium(x, z0, settings)

    def _equilibrium(self, x: Any, z0: State, settings: SolveSettings) -> State:
        """Solve for z* and return f(z*) wired for this layer's backward strategy."""
        layout = StateLayout.of(z0, "z0")

        def cell_of(z: State) -> State:
            return self.cell(z, x)

        def flat_cell(flat: torch.Tensor) -> torch.Tensor:
            return layout.flatten(self.cell(layout.unflatten(flat), x))

        with torch.set_grad_enabled(
            torch.is_grad_enabled() and self.backward.differentiates_solver
        ):
            solution = solve_with(cell_of, z0, settings, what="the cell")
        stats = DEQStats(forward=solution)
        if not self.backward.differentiates_solver and self.backward.name != "implicit":
            stats.backward_nfe = 0
        self.stats = stats
        z_star = layout.flatten(solution.z)
        if torch.is_grad_enabled():
            out = self.backward.attach(flat_cell, z_star, settings, stats.record_backward)
        else:
            out = flat_cell(z_star)
        return layout.unflatten(out)

    def extra_repr(self) -> str:
        s = self.train_settings
        return (
            f"solver={s.solver}, tol={s.tol}, max_iter={s.max_iter}, stop_mode={s.stop_mode!r}, "
            f"backward={self.backward}"
        )
