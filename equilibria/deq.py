"""The DEQ layer: an nn.Module whose output is the fixed point of a cell."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .backward import Backward, make_backward
from .errors import StateMismatchError, check_nonnegative, check_positive_int
from .fixed_point import SolveSettings, refuse_vmap
from .solution import Solution
from .solve import solve_differentiably
from .solvers import Solver
from .stability.correction import CorrectionStates, FixedPointCorrection, Trajectory
from .stability.dropout import masks_held
from .stability.jacobian import FirstApplication, JacobianPenalty, hutchinson_frobenius
from .stability.jitter import jittered_cap
from .stability.normalization import parametrizations_cached
from .stability.pretrain import Pretrain, unroll
from .state import State, StateLayout, check_finite

FlatMap = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class DEQStats:
    """Statistics of the last DEQ call.

    Attributes:
        forward: the forward solve's `Solution` (residuals, trace, status).
        backward: the adjoint solve's `Solution` once backward has run with `Implicit`.
        backward_nfe: evaluations of the adjoint solve (None until backward has run; 0 for
            strategies without an adjoint solve).
        max_iter: the iteration cap the forward solve ran under (after any jitter).
        jacobian_loss: gamma * (||J_f(z*)||_F^2 / dim estimate), differentiable, to add to the
            training loss; a zero tensor on calls that do not compute the penalty.
        jacobian_frobenius_sq: the (detached) batch-mean estimate of ||J_f(z*)||_F^2 / dim on
            calls that compute it, else None.
        initializer_loss: weight * mean squared distance between the jointly trained
            initializer's guess and the (detached) fixed point, differentiable w.r.t. the
            initializer; on training calls of a DEQ with `initializer=`, else None.
        correction: states along the solve with loss weights (with `correction=` in training).
        pretraining: whether the call ran the unrolled pretraining network instead of a solve.
    """

    forward: Solution
    extras: dict[str, Any] = field(default_factory=dict)
    max_iter: int | None = None
    jacobian_loss: torch.Tensor | None = None
    jacobian_frobenius_sq: torch.Tensor | None = None
    correction: CorrectionStates | None = None
    pretraining: bool = False
    initializer_loss: torch.Tensor | None = None

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

    @property
    def auxiliary_loss(self) -> torch.Tensor | None:
        """The losses this call asks to add to the training loss (Jacobian penalty, initializer
        fit), summed; None when there are none."""
        terms = [t for t in (self.jacobian_loss, self.initializer_loss) if t is not None]
        return sum(terms[1:], terms[0]) if terms else None

    @property
    def backward(self) -> Solution | None:
        return self.forward.backward

    @property
    def backward_nfe(self) -> int | None:
        return self.forward.backward_nfe

    def record_jacobian(self, penalty: JacobianPenalty, probe: FirstApplication) -> None:
        """The penalty on the graph of the layer's first differentiable application."""
        estimate = hutchinson_frobenius(
            probe.fz, probe.z, penalty.probes, create_graph=penalty.gamma > 0
        ).mean()
        self.jacobian_loss = penalty.gamma * estimate
        self.jacobian_frobenius_sq = estimate.detach()


def _detached(state: State) -> State:
    """`state` cut from autograd (each part of a tuple or list)."""
    if isinstance(state, torch.Tensor):
        return state.detach()
    return type(state)(part.detach() for part in state)


def _setting(value: Any, kind: type, name: str, example: str) -> Any:
    """`value` if it is None or a `kind`, else a TypeError showing how to build one."""
    if value is not None and not isinstance(value, kind):
        raise TypeError(f"{name} must be None or an {example}, got {type(value).__name__}")
    return value


class DEQ(nn.Module):
    """A deep equilibrium layer: returns z* with z* = cell(z*, x).

    `cell(z, x)` is an nn.Module returning the same structure as `z` (a tensor or a tuple/list of
    tensors). The fixed point is found without autograd by `solver`; gradients w.r.t. `x` and
    the cell's parameters come from `backward` ("implicit", "phantom", "onestep", "unrolled", or
    an object such as `eq.Implicit(tol=1e-6)`). The output is one differentiable application
    f(z*), and statistics of the last call are on `deq.stats`.

    Within one call, every normalized weight of the cell (`eq.weight_norm`, `eq.spectral_norm`)
    is computed once and every `eq.VariationalDropout` keeps one mask.

    Defaults (Anderson to rel 1e-3 within 20 evaluations, the implicit backward with the
    damped adjoint iteration under the same tolerance and cap) were chosen by training five
    users' cells of `python -m benchmarks parity` (seeds 0 and 1): against TorchDEQ's
    `get_deq()` defaults they train res-conv to 95.1 against 86.9%, a plain conv cell to
    96.5/85.7, the MDEQ to 94.6/92.9 and the Transformer to 3.513/3.555 bits per character, and
    lose on a tanh MLP (95.4/96.2), in 1.25-1.7x its training time. The previous defaults (rel
    1e-4, cap 50 both ways) took 2.3-3.8x its time and trained the MDEQ to 45.6% (seed 0): an
    adjoint cut at a long cap on a cell near the edge of stability amplifies its unstable modes;
    the one-step gradient with the same forward solve was faster but lost 5-11 points on the
    conv cells, and an adjoint cap of 8 lost 4 points on the MDEQ (seed 0).

    Args:
        cell: the layer f(z, x).
        solver: solver name or object; extra keywords are the named solver's hyperparameters.
        tol, max_iter, stop_mode, patience, divergence_ratio, on_failure: see `SolveSettings`.
        backward: the backward strategy.
        eval_solver, eval_tol, eval_max_iter: replacements used in `eval()` mode.
        check_input: raise on non-finite input (costs one synchronization per call).
        jacobian_penalty: an `eq.JacobianPenalty(gamma, p, probes)`; training calls then put
            the penalty on `stats.jacobian_loss`.
        correction: an `eq.FixedPointCorrection(states, decay)`; training calls then put states
            along the solve on `stats.correction`.
        pretrain: an `eq.Pretrain(depth, steps)`: the first `steps` training calls run the cell
            `depth` times as an unrolled network (see `pretraining`, `end_pretraining`).
        iteration_jitter: training calls draw their cap from [max_iter - jitter, max_iter].
        initializer: a small network h(x) whose output (the state's structure) starts every
            solve without a z0, trained jointly with the model: training calls put
            `initializer_weight * mean((h(x) - z*.detach())^2)` on `stats.initializer_loss`,
            so each solve starts nearer its answer as training goes on.
        initializer_weight: the weight of that loss (> 0).

    Example:
        >>> cell = eq.cells.TanhCell(8)                # doctest: +SKIP
        >>> deq = eq.DEQ(cell, solver="anderson", tol=1e-5, eval_max_iter=100)
        >>> z = deq(torch.randn(16, 8)); deq.stats.forward_nfe
    """

    def __init__(
        self,
        cell: nn.Module,
        solver: str | Solver = "anderson",
        *,
        tol: float = 1e-3,
        max_iter: int = 20,
        stop_mode: str = "rel",
        backward: str | Backward = "implicit",
        patience: int | None = 20,
        divergence_ratio: float = 1e4,
        on_failure: str = "warn",
        eval_solver: str | Solver | None = None,
        eval_tol: float | None = None,
        eval_max_iter: int | None = None,
        check_input: bool = True,
        jacobian_penalty: JacobianPenalty | None = None,
        correction: FixedPointCorrection | None = None,
        pretrain: Pretrain | None = None,
        iteration_jitter: int = 0,
        initializer: nn.Module | None = None,
        initializer_weight: float = 1.0,
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
        self.jacobian_penalty = _setting(
            jacobian_penalty, JacobianPenalty, "jacobian_penalty", "eq.JacobianPenalty(gamma, p)"
        )
        self.correction = _setting(
            correction, FixedPointCorrection, "correction", "eq.FixedPointCorrection(states)"
        )
        self.pretrain = _setting(pretrain, Pretrain, "pretrain", "eq.Pretrain(depth, steps)")
        if pretrain is not None:  # a buffer, so that checkpoints resume the schedule
            self.register_buffer("pretrain_remaining", torch.tensor(pretrain.steps))
        self.iteration_jitter = check_positive_int("iteration_jitter", iteration_jitter, minimum=0)
        self.initializer = _setting(initializer, nn.Module, "initializer", "nn.Module h(x)")
        if check_nonnegative("initializer_weight", initializer_weight) <= 0:
            raise ValueError(f"initializer_weight must be > 0, got {initializer_weight!r}")
        self.initializer_weight = float(initializer_weight)
        if iteration_jitter and iteration_jitter >= max_iter:
            raise ValueError(
                f"iteration_jitter must be smaller than max_iter ({max_iter}), got "
                f"{iteration_jitter}"
            )
        self.stats: DEQStats | None = None

    @property
    def settings(self) -> SolveSettings:
        """The solve settings in force for the current mode (train or eval)."""
        return self.train_settings if self.training else self.eval_settings

    @property
    def pretraining(self) -> bool:
        """Whether calls run the unrolled pretraining network (in train and eval mode alike)."""
        return self.pretrain is not None and int(self.pretrain_remaining) > 0

    def end_pretraining(self) -> None:
        """Switch to the equilibrium solve now, whatever is left of the pretraining steps."""
        if self.pretrain is not None:
            self.pretrain_remaining.zero_()

    def initial_state(self, x: Any, solver: Solver | None = None) -> State:
        """The start of the solve when no z0 is given.

        A learned initial guess when `solver` has one (`solver.initial_state(x)`, as a trained
        `eq.NeuralSolver` does), else the jointly trained `initializer(x)` when the layer has
        one, else `cell.init_state(x)` when the cell defines it, else zeros like `x`.
        """
        learned = getattr(solver, "initial_state", None)
        if callable(learned):
            return learned(x)
        if self.initializer is not None:
            return _detached(self._initial_guess(x))
        return self._default_state(x)

    def _default_state(self, x: Any) -> State:
        init = getattr(self.cell, "init_state", None)
        if callable(init):
            return init(x)
        if not isinstance(x, torch.Tensor):
            raise TypeError(
                "z0 was not given and the input is not a tensor, so the initial state is "
                "unknown: pass z0 or define init_state(x) on the cell"
            )
        return torch.zeros_like(x)

    def _initial_guess(self, x: Any) -> State:
        """The initializer's output, checked against the structure of the default state."""
        guess = self.initializer(x)
        expected = StateLayout.of(self._default_state(x), "the state")
        try:
            expected.check_same(guess, "the initializer's output")
        except StateMismatchError as error:
            raise StateMismatchError(
                f"{error} (the initializer must return the state's structure, as the cell's "
                "init_state(x) or zeros like x have it)"
            ) from None
        return guess

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
        """The fixed point for input `x`; the keywords override the settings for this call.

        While pretraining lasts (`pretrain=`), the output is that of the unrolled network instead.
        """
        refuse_vmap()
        if self.check_input:
            check_finite(x if isinstance(x, (tuple, list)) else (x,), "the DEQ input")
        settings = self.settings.updated(
            solver=solver, tol=tol, max_iter=max_iter, on_failure=on_failure
        )
        guess = None
        if z0 is None and self._fits_initializer(settings.solver):
            guess = self._initial_guess(x)  # with its graph: the fit loss trains it
            z0 = _detached(guess)
        z0 = self.initial_state(x, settings.solver) if z0 is None else z0
        # normalized weights are computed once and dropout masks drawn once for the whole call
        with parametrizations_cached(self.cell), masks_held(self.cell):
            if self.pretraining:
                return self._unrolled(x, z0, settings)
            return self._equilibrium(x, z0, settings, jitter=max_iter is None, guess=guess)

    def _equilibrium(
        self, x: Any, z0: State, settings: SolveSettings, jitter: bool, guess: State | None
    ) -> State:
        """Solve for z*, then return f(z*) wired for this layer's backward strategy."""
        layout = StateLayout.of(z0, "z0")
        cell_of, flat_cell = self._cell_maps(x, layout)
        training = self.training and torch.is_grad_enabled()
        trajectory = Trajectory(layout) if training and self.correction else None
        probe = FirstApplication(flat_cell) if training and self._penalty_drawn() else None
        forward_map = trajectory.recording(cell_of) if trajectory is not None else cell_of
        through = probe or flat_cell
        # a cell with a monotone splitting (the cells of `equilibria.monotone`) lends it to the
        # maps the solves see, wrappers included, for the splitting solvers forward and adjoint
        splitting = getattr(self.cell, "splitting", None)
        if callable(splitting):
            forward_map.splitting = through.splitting = splitting(x)  # type: ignore[union-attr]
        solve_settings = self._solve_settings(settings, jitter)
        solution, out = solve_differentiably(
            forward_map,
            z0,
            solve_settings,
            self.backward,
            what="the cell",
            through=through,
            backward_defaults=settings,  # the adjoint's cap is never jittered
        )
        stats = self.stats = DEQStats(
            forward=solution,
            max_iter=solve_settings.max_iter,
            jacobian_loss=torch.zeros((), device=layout.device),
        )
        if probe is not None:
            if probe.z is None:  # a strategy that owns its forward applies no cell at z*
                probe(layout.flatten(solution.z).detach())
            stats.record_jacobian(self.jacobian_penalty, probe)
        if guess is not None:
            fit = layout.flatten(guess) - layout.flatten(solution.z).detach()
            stats.initializer_loss = self.initializer_weight * fit.square().mean()
        if trajectory is not None:
            stats.correction = trajectory.corrections(self.correction, flat_cell, settings, out)
        return out

    def _cell_maps(self, x: Any, layout: StateLayout) -> tuple[Callable[[State], State], FlatMap]:
        """The cell as a map of states and as a map of flat `(batch, features)` matrices."""

        def cell_of(z: State) -> State:
            return self.cell(z, x)

        def flat_cell(flat: torch.Tensor) -> torch.Tensor:
            return layout.flatten(self.cell(layout.unflatten(flat), x))

        return cell_of, flat_cell

    def _fits_initializer(self, solver: Solver) -> bool:
        """Whether this call trains the initializer: a training call with autograd, starting
        from the initializer's guess (not from a learned solver's own)."""
        return (
            self.initializer is not None
            and self.training
            and torch.is_grad_enabled()
            and not callable(getattr(solver, "initial_state", None))
        )

    def _penalty_drawn(self) -> bool:
        """Whether this training call computes the Jacobian penalty."""
        return self.jacobian_penalty is not None and self.jacobian_penalty.draw()

    def _solve_settings(self, settings: SolveSettings, jitter: bool) -> SolveSettings:
        """The forward solve's settings: in training, the cap jittered unless set for the call."""
        if not (self.training and jitter and self.iteration_jitter):
            return settings
        return settings.updated(max_iter=jittered_cap(settings.max_iter, self.iteration_jitter))

    def _unrolled(self, x: Any, z0: State, settings: SolveSettings) -> State:
        """Pretraining: the cell applied `pretrain.depth` times, with ordinary backpropagation."""
        layout = StateLayout.of(z0, "z0")
        cell_of, _ = self._cell_maps(x, layout)
        out, record = unroll(cell_of, z0, self.pretrain.depth, settings)
        record.backward_nfe = 0  # ordinary backpropagation: no adjoint solve
        if self.training and torch.is_grad_enabled():
            self.pretrain_remaining -= 1
        self.stats = DEQStats(
            forward=record,
            max_iter=self.pretrain.depth,
            jacobian_loss=torch.zeros((), device=layout.device),
            pretraining=True,
        )
        return out

    def extra_repr(self) -> str:
        s = self.train_settings
        return (
            f"solver={s.solver}, tol={s.tol}, max_iter={s.max_iter}, stop_mode={s.stop_mode!r}, "
            f"backward={self.backward}"
        )


def jacobian_loss(model: nn.Module) -> torch.Tensor:
    """Sum of `stats.jacobian_loss` over every `eq.DEQ` inside `model`, from their last calls.

    Call it once per training step, after the forward pass: `loss = task + eq.jacobian_loss(model)`.
    """
    terms = [m.stats.jacobian_loss for m in model.modules() if isinstance(m, DEQ) and m.stats]
    terms = [t for t in terms if t is not None]
    if not terms:
        raise ValueError(
            f"jacobian_loss found no eq.DEQ with statistics in {type(model).__name__}; run the "
            "model's forward first"
        )
    return torch.stack([t.to(terms[0].dtype) for t in terms]).sum()
