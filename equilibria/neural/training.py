"""Training a NeuralSolver on a frozen DEQ, without labels."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from ..deq import DEQ
from ..errors import check_nonnegative, check_positive_int
from ..fixed_point import find_fixed_point
from ..state import StateLayout
from .mixing import History
from .solver import NeuralSolver


@dataclass(frozen=True)
class SolverTraining:
    """Settings for `fit_neural_solver`.

    Attributes:
        epochs: passes over the training inputs.
        unroll: K, the solver steps unrolled per example (each step's error is penalized, later
            steps more: weight proportional to the step number).
        lr: Adam learning rate.
        init_weight: weight of the initializer's distance to the fixed point.
        residual_weight: weight of the relative residual ||f(z) - z|| / ||f(z)|| of the iterates
            (each step's residual is computed by the next step anyway, so it costs nothing).
        init_epochs: passes that fit the initializer alone to the fixed points first (cheap:
            no cell evaluations), so the unrolled phase starts from a good initial guess.
        aux_weight: initial weight of the auxiliary term that keeps the learned correction to
            Anderson's mixing weights small; annealed linearly to 0 over the first half of
            training.
        target_tol, target_max_iter: the long classical solve that produces the targets.
    """

    epochs: int = 10
    unroll: int = 6
    lr: float = 1e-3
    init_weight: float = 1.0
    residual_weight: float = 0.0
    init_epochs: int = 0
    aux_weight: float = 0.5
    target_tol: float = 1e-6
    target_max_iter: int = 200

    def __post_init__(self) -> None:
        check_positive_int("epochs", self.epochs)
        check_positive_int("unroll", self.unroll)
        check_nonnegative("lr", self.lr)
        check_nonnegative("init_weight", self.init_weight)
        check_nonnegative("residual_weight", self.residual_weight)
        check_positive_int("init_epochs", self.init_epochs, minimum=0)
        check_nonnegative("aux_weight", self.aux_weight)
        check_nonnegative("target_tol", self.target_tol)
        check_positive_int("target_max_iter", self.target_max_iter)


@dataclass
class TrainingLog:
    loss: list[float] = field(default_factory=list)
    final_step_error: list[float] = field(default_factory=list)
    init_error: list[float] = field(default_factory=list)


@contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Parameters of `module` stop requiring gradients inside the block (restored after)."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def fixed_point_targets(deq: DEQ, x: torch.Tensor, config: SolverTraining) -> torch.Tensor:
    """Flat fixed points of the frozen DEQ for inputs `x`, from a long Anderson solve."""
    settings = deq.settings.updated(
        solver="anderson", tol=config.target_tol, max_iter=config.target_max_iter
    )
    settings = settings.updated(on_failure="ignore")
    with torch.no_grad():
        z0 = deq.initial_state(x)
        solution = find_fixed_point(lambda z: deq.cell(z, x), z0, settings, what="the cell")
    return StateLayout.of(z0).flatten(solution.z)


def relative_error(z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample ||z - target|| / ||target||."""
    return (z - target).norm(dim=1) / target.norm(dim=1).clamp_min(1e-12)


def unrolled_loss(
    solver: NeuralSolver,
    deq: DEQ,
    x: torch.Tensor,
    target: torch.Tensor,
    config: SolverTraining,
    aux_weight: float,
) -> tuple[torch.Tensor, float, float]:
    """(loss, error after the last step, initializer error) for one batch."""
    z0 = solver.initial_state(x)
    layout = StateLayout.of(z0, "the initializer's output")
    z = layout.flatten(z0)
    init_error = relative_error(z, target).mean()
    history = History.empty(z.detach(), solver.m)
    step_losses, aux_losses, residuals = [], [], []
    for step in range(config.unroll):
        fz = layout.flatten(deq.cell(layout.unflatten(z), x))
        if step > 0 and config.residual_weight > 0:
            residuals.append(relative_error(z, fz).mean())
        history = history.push(z, fz - z)
        z, correction = solver.propose(history)
        step_losses.append(relative_error(z, target).mean())
        if aux_weight > 0:
            aux_losses.append(correction.pow(2).sum(dim=1).mean())
    weights = torch.arange(1, config.unroll + 1, dtype=z.dtype, device=z.device)
    loss = (torch.stack(step_losses) * weights).sum() / weights.sum()
    loss = loss + config.init_weight * init_error
    if residuals:
        loss = loss + config.residual_weight * torch.stack(residuals).mean()
    if aux_losses:
        loss = loss + aux_weight * torch.stack(aux_losses).mean()
    return loss, float(step_losses[-1].detach()), float(init_error.detach())


def fit_neural_solver(
    deq: DEQ,
    batches: Iterable[torch.Tensor],
    solver: NeuralSolver | None = None,
    config: SolverTraining | None = None,
    *,
    progress: bool = True,
) -> tuple[NeuralSolver, TrainingLog]:
    """Train a NeuralSolver for the frozen `deq` on its inputs (a re-iterable of x batches).

    Targets are fixed points from a long classical solve, computed once per batch. The DEQ's
    parameters are not changed. Returns the solver and the per-epoch training log.
    """
    config = config or SolverTraining()
    batches = list(batches)
    if not batches:
        raise ValueError("fit_neural_solver needs at least one batch of DEQ inputs")
    targets = [fixed_point_targets(deq, x, config) for x in batches]
    if solver is None:
        solver = NeuralSolver.for_model(batches[0], deq.initial_state(batches[0]))
    solver.train()
    if config.init_epochs:
        fit_initializer(solver, batches, targets, config)
    optimizer = torch.optim.Adam(solver.parameters(), lr=config.lr)
    log = TrainingLog()
    total = config.epochs * len(batches)
    bar = _progress(total, progress)
    step = 0
    with frozen(deq):
        for _ in range(config.epochs):
            losses, finals, inits = [], [], []
            for x, target in zip(batches, targets, strict=True):
                anneal = max(0.0, 1.0 - step / max(1, total // 2))
                loss, final, init = unrolled_loss(
                    solver, deq, x, target, config, config.aux_weight * anneal
                )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(solver.parameters(), 1.0)
                optimizer.step()
                losses.append(float(loss.detach()))
                finals.append(final)
                inits.append(init)
                step += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{losses[-1]:.3f}", err=f"{final:.2e}")
            log.loss.append(sum(losses) / len(losses))
            log.final_step_error.append(sum(finals) / len(finals))
            log.init_error.append(sum(inits) / len(inits))
    if bar is not None:
        bar.close()
    solver.eval()
    return solver, log


def fit_initializer(
    solver: NeuralSolver,
    batches: list[torch.Tensor],
    targets: list[torch.Tensor],
    config: SolverTraining,
) -> None:
    """`config.init_epochs` passes of the initializer alone toward the fixed points."""
    parameters = list(solver.initializer.parameters())
    optimizer = torch.optim.Adam(parameters, lr=config.lr)
    steps = config.init_epochs * len(batches)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for _ in range(config.init_epochs):
        for x, target in zip(batches, targets, strict=True):
            z0 = solver.initial_state(x)
            loss = relative_error(StateLayout.of(z0).flatten(z0), target).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # progress bars are optional
        return None
    return tqdm(total=total, desc="training neural solver", leave=False)
