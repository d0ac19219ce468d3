"""How a DEQ's output receives gradients: backward strategies as values.

Each strategy takes the flat cell map f (one differentiable evaluation per call) and the fixed
point z* found by the forward solve, and returns the layer output f(z*) wired for autograd.
Parameters always receive their gradients through ordinary autograd of a cell application,
never through a custom autograd.Function, so DDP, hooks and compiled cells keep working. The one
exception is `equilibria.reversible`, which owns its forward iteration: its gradient reaches the
tensors the cell closes over as the inputs of one autograd.Function (each accumulated once).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import torch

from .errors import (
    NonFiniteError,
    UnsupportedError,
    check_choice,
    check_fraction,
    check_positive_int,
)
from .fixed_point import SolveSettings, find_fixed_point
from .solution import Solution
from .solvers import Picard, Solver, make_solver

FlatMap = Callable[[torch.Tensor], torch.Tensor]
Recorder = Callable[[Solution], None]


class Backward(ABC):
    """A backward strategy.

    `differentiates_solver` asks for the forward solve to run with autograd on; `solves_adjoint`
    says that the gradient comes from an adjoint solve, recorded on the forward's `Solution`;
    `owns_forward` says that the strategy runs its own forward iteration (`solve`) in place of
    the configured solver, and `attach` is not used.
    """

    name: ClassVar[str]
    differentiates_solver: ClassVar[bool] = False
    solves_adjoint: ClassVar[bool] = False
    owns_forward: ClassVar[bool] = False

    @abstractmethod
    def attach(
        self, f: FlatMap, z_star: torch.Tensor, forward: SolveSettings, record: Recorder
    ) -> torch.Tensor:
        """The output f(z*) as a `(batch, features)` matrix, with this strategy's gradient."""

    def solve(
        self,
        f: Callable[[Any], Any],
        z0: Any,
        settings: SolveSettings,
        *,
        what: str = "f",
        through: FlatMap | None = None,
    ) -> tuple[Solution, Any]:
        """For strategies that own the forward: the solution and the output, with this
        strategy's gradient under grad mode (`through`: the same map on flat matrices)."""
        raise NotImplementedError(f"{type(self).__name__} does not run its own forward")

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


# The adjoint's default solver: the damped fixed-point iteration y <- y + d (y J + g - y) from
# y = g. Run to convergence it gives the exact implicit gradient, like any solver. Cut after K
# steps, as it is in training, it is a truncated damped Neumann series: on an eigenvalue s of J
# it multiplies g by p_K(s) = q^K + (1 - q^K) / (1 - s), q = 1 - d (1 - s). That is the exact
# 1 / (1 - s) on the well-separated part of the spectrum, 1 + d K at s = 1, and positive, like
# the sensitivity of the iterates themselves, where s passes 1 (an unstable fixed point, which
# the forward solve cannot reach), growing like q^K there. Training solves stop at their cap
# with the spectral radius of J about 1, so these modes matter. Accelerated solvers (Anderson,
# Broyden: Krylov-like on this linear equation) approximate 1 / (1 - s) on every mode they
# resolve: cut short, they amplify the near-singular modes and flip the sign of the unstable
# ones, and the models trained on them are worse. d = 0.3 keeps the growth past 1 moderate
# (about 90-fold at s = 1.7 after 19 steps, against 700-fold for d = 0.5, with which the
# spectrum of a trained cell ran away to 2); `python -m benchmarks parity-spectrum` measures it.
# Damping costs speed where nothing needs it: on every eigenvalue in (-1, 1) the undamped
# iteration converges faster, and `eq.Picard(damping=0.3, switch_ratio=0.8)` starts undamped and
# damps a sample once its residual shrinks by less than 0.8 a step. It is not the default: the
# residual's ratio is dominated by the fast modes for the first steps, so an unstable mode
# grows undamped under them until the switch (on the parity benchmark's plain conv cell, seed
# 0, it trained to 39.7% against 96.1% with the damped iteration from the first step).
ADJOINT_DAMPING = 0.3

HIGHER_ORDER = (
    "create_graph=True cannot pass through an implicit backward: its gradient is the solution "
    "of an adjoint equation, not a traced computation, so it has no derivative of its own; "
    "for gradient penalties or meta-gradients use backward=eq.Unrolled() (exact for the "
    "iterations taken) or eq.Phantom(steps=...) (a differentiable approximation)"
)


def default_adjoint_solver() -> Solver:
    """The solver of the adjoint equation when `Implicit` names none (see ADJOINT_DAMPING)."""
    return Picard(damping=ADJOINT_DAMPING)


class Implicit(Backward):
    """Gradients by the implicit function theorem.

    When the gradient g of the output arrives, the adjoint fixed point y = y J_f(z*) + g is solved
    with vector-Jacobian products only, using its own solver settings (each None defaults to the
    forward's tolerance, cap and stop mode), and y flows on through the one differentiable cell
    application at z*.

    The adjoint's solver defaults to the damped fixed-point iteration `eq.Picard(damping=0.3)`,
    whatever the forward uses: converged, it gives the exact implicit gradient; stopped at its
    cap, it gives a truncated damped Neumann series, which stays bounded and keeps its sign
    where the cell's Jacobian has eigenvalues near or past 1. Name an accelerated solver
    (`eq.Implicit("anderson")`) to reach a tight tolerance in fewer evaluations when the forward
    solve converges to a stable fixed point (hypergradients, gradient checks).
    """

    name: ClassVar[str] = "implicit"
    solves_adjoint: ClassVar[bool] = True

    def __init__(
        self,
        solver: str | Solver | None = None,
        *,
        tol: float | None = None,
        max_iter: int | None = None,
        stop_mode: str | None = None,
        **solver_options: Any,
    ) -> None:
        if solver is None and solver_options:  # hyperparameters of the default solver
            solver, solver_options = "picard", {"damping": ADJOINT_DAMPING, **solver_options}
        if solver is not None:
            solver = make_solver(
                solver,
                solver_options,
                owner="Implicit()",
                other_keywords=("solver", "tol", "max_iter", "stop_mode"),
            )
        self.solver = solver
        self.tol = tol
        self.max_iter = max_iter
        self.stop_mode = stop_mode
        # validate now: a bad value must fail here, not in the middle of a backward pass
        self.settings_for(SolveSettings(solver=solver or default_adjoint_solver()))

    def settings_for(self, forward: SolveSettings) -> SolveSettings:
        """The adjoint solve's settings: this strategy's values over the forward's (with the
        damped fixed-point iteration when this strategy names no solver)."""
        return forward.updated(
            solver=self.solver or default_adjoint_solver(),
            tol=self.tol,
            max_iter=self.max_iter,
            stop_mode=self.stop_mode,
        )

    def attach(
        self, f: FlatMap, z_star: torch.Tensor, forward: SolveSettings, record: Recorder
    ) -> torch.Tensor:
        z = z_star.detach().requires_grad_()
        fz = f(z)
        if not _reaches_beyond(fz, z):  # nothing upstream needs a gradient: no adjoint
            return fz.detach()
        settings = self.settings_for(forward)
        splitting = getattr(f, "splitting", None)

        def adjoint(grad: torch.Tensor | None) -> torch.Tensor | None:
            if grad is None:  # an undefined gradient stays undefined
                return None
            if torch.is_grad_enabled():  # autograd turns grad mode on only for create_graph
                raise UnsupportedError(HIGHER_ORDER)
            if not bool(torch.isfinite(grad).all()):
                raise NonFiniteError(
                    "the gradient arriving at the DEQ output holds non-finite values"
                )

            def vjp_plus_grad(y: torch.Tensor) -> torch.Tensor:
                (vjp,) = torch.autograd.grad(fz, z, y, retain_graph=True)
                return vjp + grad

            if splitting is not None:  # a monotone cell's: the adjoint has a splitting too
                vjp_plus_grad.splitting = splitting.adjoint(fz, grad)  # type: ignore[attr-defined]

            solution = find_fixed_point(
                vjp_plus_grad, grad, settings, what="the backward (adjoint) equation"
            )
            record(solution)
            return solution.z

        # the hook sits on an alias of fz, so the vector-Jacobian products above (taken from fz
        # itself) do not trigger it again
        out = fz.view_as(fz)
        out.register_hook(adjoint)
        return out


def _reaches_beyond(out: torch.Tensor, z: torch.Tensor) -> bool:
    """Whether a gradient of `out` would reach anything but the leaf `z`: a tensor that
    requires grad (a parameter, an input closed over). A depth-first walk of the graph that
    stops at the first such tensor, which in a cell with parameters is a few nodes away."""
    if out.grad_fn is None:
        return out.requires_grad and out is not z
    stack, seen = [out.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)  # the node that accumulates into a leaf
        if variable is not None:
            if variable is not z:
                return True
            continue
        stack.extend(parent for parent, _ in node.next_functions)
    return False


class Phantom(Backward):
    """Phantom gradient: `steps` damped cell applications z <- (1 - tau) z + tau f(z) from z*.

    Cheaper than the implicit solve and approaches its gradient as `steps` grows.
    """

    name: ClassVar[str] = "phantom"

    def __init__(self, steps: int = 5, tau: float = 0.6) -> None:
        self.steps = check_positive_int("Phantom steps", steps)
        self.tau = check_fraction("Phantom tau", tau)

    def attach(
        self, f: FlatMap, z_star: torch.Tensor, forward: SolveSettings, record: Recorder
    ) -> torch.Tensor:
        z = z_star.detach()
        for _ in range(self.steps):
            z = z + self.tau * (f(z) - z) if self.tau != 1.0 else f(z)
        return z


class OneStep(Backward):
    """Jacobian-free gradient: differentiate only the last application f(z*), as if J = 0."""

    name: ClassVar[str] = "onestep"

    def attach(
        self, f: FlatMap, z_star: torch.Tensor, forward: SolveSettings, record: Recorder
    ) -> torch.Tensor:
        return f(z_star.detach())


class Unrolled(Backward):
    """Backpropagate through every solver iteration (a reference; memory grows with depth)."""

    name: ClassVar[str] = "unrolled"
    differentiates_solver: ClassVar[bool] = True

    def attach(
        self, f: FlatMap, z_star: torch.Tensor, forward: SolveSettings, record: Recorder
    ) -> torch.Tensor:
        return f(z_star)


# strategies defined in modules of their own add themselves on import (`equilibria.reversible`,
# which the package imports, so the registry is complete whenever equilibria is loaded)
BACKWARDS: dict[str, type[Backward]] = {
    cls.name: cls for cls in (Implicit, Phantom, OneStep, Unrolled)
}


def make_backward(spec: str | Backward) -> Backward:
    """A backward strategy from its name (defaults) or an existing strategy object."""
    if isinstance(spec, Backward):
        return spec
    if not isinstance(spec, str):
        raise TypeError(
            f"backward must be a name ({', '.join(BACKWARDS)}) or an object such as "
            f"eq.Implicit(tol=1e-6), got {type(spec).__name__}"
        )
    return BACKWARDS[check_choice("backward", spec, BACKWARDS)]()
