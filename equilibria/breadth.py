"""Test-time compute in breadth: solve every sample from several initial states in one batched
call, then keep per sample the start whose solve reached the lowest residual, or a majority vote.

Layout: the batch is repeated `starts` times, so row `k * batch + i` of the batched call is
start k of sample i. Start 0 is the DEQ's own initial state (`starts=1` is the plain call).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch

from .deq import DEQ
from .errors import (
    ConvergenceWarning,
    NotConvergedError,
    check_choice,
    check_nonnegative,
    check_positive_int,
    warn_at_caller,
)
from .fixed_point import ON_FAILURE
from .solution import Solution
from .solvers import Solver
from .state import State, StateLayout, describe

Start = Callable[[Any, int], State]
Answer = Callable[[State], torch.Tensor]
SELECT = ("residual", "vote")


def _map(state: State, fn: Callable[[torch.Tensor], torch.Tensor]) -> State:
    """`fn` applied to a tensor or to each part of a tuple/list, keeping the structure."""
    if isinstance(state, torch.Tensor):
        return fn(state)
    return type(state)(fn(part) for part in state)


def _parts(state: State) -> list[torch.Tensor]:
    return [state] if isinstance(state, torch.Tensor) else list(state)


def _samples(best: torch.Tensor) -> torch.Tensor:
    """0..B-1 on `best`'s device: with `best`, indexes one start per sample."""
    return torch.arange(best.shape[0], device=best.device)


def _lowest(residual: torch.Tensor, allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Per column, the row of the lowest residual among `allowed` (NaN counts as worst; ties go
    to the lowest row, so start 0 wins a tie)."""
    worst = residual.isnan() if allowed is None else residual.isnan() | ~allowed
    return residual.masked_fill(worst, float("inf")).argmin(dim=0)


def _vote(answers: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """Per sample, the start whose answer most starts give; among tied answers, the one whose
    best start has the lowest residual, and that start. `answers` is (starts, batch, ...)."""
    flat = answers.reshape(answers.shape[0], answers.shape[1], -1)
    count = torch.stack([(flat == row).all(dim=-1).sum(dim=0) for row in flat])  # (starts, batch)
    return _lowest(residual, (count == count.max(dim=0).values).to(residual.device))


@dataclass
class BreadthResult:
    """What `solve_breadth` returns (S = starts, B = batch).

    Attributes:
        z: the selected state per sample, in the structure of `deq(x)` (differentiable when the
            call was: selection is indexing).
        states: every start's state: the structure of `deq(x)`, each part (S, B, ...).
        residual: (S, B) residual each start's solve reached, in the DEQ's `stop_mode`.
        converged: (S, B) whether it reached the tolerance.
        best: (B,) index of the selected start.
        nfe: evaluations of the one batched solve.
        solution: that solve's `Solution` (batch S * B, row k * B + i is start k of sample i).
        answer: with `select="vote"`, the winning answer per sample (B, ...); else None.
    """

    z: State
    states: State
    residual: torch.Tensor
    converged: torch.Tensor
    best: torch.Tensor
    nfe: int
    solution: Solution
    answer: torch.Tensor | None = None

    @property
    def starts(self) -> int:
        return self.residual.shape[0]

    @property
    def batch(self) -> int:
        return self.residual.shape[1]

    @property
    def selected_residual(self) -> torch.Tensor:
        """(B,) residual of the selected start."""
        return self.residual[self.best, _samples(self.best)]

    @property
    def selected_converged(self) -> torch.Tensor:
        """(B,) whether the selected start converged."""
        return self.converged[self.best, _samples(self.best)]

    def answers(self, answer: Answer) -> torch.Tensor:
        """(S, B, ...) discrete answers: `answer` maps a batch of states (the structure of
        `deq(x)`, batch S * B, row k * B + i) to an integer or bool tensor (S * B, ...)."""
        flat = _map(self.states, lambda p: p.reshape(-1, *p.shape[2:]))
        return _answers(answer, flat, self.starts, self.batch)

    def vote(self, answer: Answer) -> torch.Tensor:
        """(B, ...) per sample, the answer given by the most starts; ties go to the answer whose
        best start reached the lowest residual."""
        answers = self.answers(answer)
        chosen = _vote(answers, self.residual).to(answers.device)
        return answers[chosen, _samples(chosen)]


def _answers(answer: Answer, states: State, starts: int, batch: int) -> torch.Tensor:
    """`answer(states)`, checked and shaped (starts, batch, ...)."""
    with torch.no_grad():
        values = answer(states)
    if not isinstance(values, torch.Tensor) or values.is_floating_point() or values.is_complex():
        raise TypeError(
            "answer must return an integer or bool tensor (one discrete answer per state), got "
            f"{describe(values)}"
        )
    if values.dim() < 1 or values.shape[0] != starts * batch:
        raise ValueError(
            f"answer must return one answer per state: a tensor of leading size {starts * batch} "
            f"(starts * batch), got shape {tuple(values.shape)}"
        )
    return values.reshape(starts, batch, *values.shape[1:])


def _repeat(x: Any, starts: int, batch: int) -> Any:
    """`x` with every tensor repeated `starts` times along its first (batch) dimension, in nested
    tuples, lists and dicts too; other values are left as they are."""
    if isinstance(x, torch.Tensor):
        if x.dim() == 0:
            return x
        if x.shape[0] != batch:
            raise ValueError(
                f"solve_breadth repeats every tensor of x along its first dimension, which must be "
                f"the batch ({batch}); got a tensor of shape {tuple(x.shape)}"
            )
        return x.repeat(starts, *[1] * (x.dim() - 1))
    if isinstance(x, (tuple, list)):
        return type(x)(_repeat(part, starts, batch) for part in x)
    if isinstance(x, dict):
        return {key: _repeat(value, starts, batch) for key, value in x.items()}
    return x


def _noise(
    part: torch.Tensor, starts: int, scale: float, generator: torch.Generator | None
) -> torch.Tensor:
    """`part` repeated for starts 1..S-1, plus `scale` times standard normal noise."""
    rows = part.repeat(starts - 1, *[1] * (part.dim() - 1))
    device = generator.device if generator is not None else part.device
    noise = torch.randn(rows.shape, generator=generator, dtype=part.dtype, device=device)
    return rows + scale * noise.to(part.device)


def _concat(states: list[State]) -> State:
    """States of one layout concatenated along the batch dimension."""
    columns = zip(*(_parts(s) for s in states), strict=True)
    joined = [torch.cat(column) for column in columns]
    first = states[0]
    return joined[0] if isinstance(first, torch.Tensor) else type(first)(joined)


def _initial_states(
    base: State, x: Any, starts: int, scale: float, generator: torch.Generator | None, start: Start
) -> State:
    """Start 0 (`base`) followed by starts 1..S-1, batch-concatenated."""
    if start is None:
        return _concat([base, _map(base, lambda p: _noise(p, starts, scale, generator))])
    layout = StateLayout.of(base, "the DEQ's initial state")
    others = []
    for k in range(1, starts):
        state = start(x, k)
        layout.check_same(state, f"start(x, {k})")
        others.append(state)
    return _concat([base, *others])


def _check(
    deq: Any,
    starts: Any,
    scale: Any,
    generator: Any,
    start: Any,
    select: Any,
    answer: Any,
) -> None:
    """One clear error for each bad argument."""
    if not isinstance(deq, DEQ):
        raise TypeError(f"solve_breadth needs an eq.DEQ, got {type(deq).__name__}")
    check_positive_int("starts", starts)
    check_nonnegative("scale", scale)
    check_choice("select", select, SELECT)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be None or a torch.Generator, got {type(generator)}")
    if start is not None and not callable(start):
        raise TypeError(f"start must be None or a callable (x, k) -> state, got {type(start)}")
    if (select == "vote") != (answer is not None):
        raise ValueError(
            "select='vote' needs answer=fn (states -> discrete answers), and answer= is used "
            f"only with select='vote'; got select={select!r}, answer={answer!r}"
        )
    if answer is not None and not callable(answer):
        raise TypeError(f"answer must be a callable states -> answers, got {type(answer)}")


def _report(result: BreadthResult, on_failure: str) -> None:
    """Warn about or raise on selected starts that missed the tolerance, per `on_failure`."""
    done = result.selected_converged
    if on_failure == "ignore" or bool(done.all()):
        return
    sol = result.solution
    text = (
        f"breadth solve of the cell did not converge: {int(done.sum())}/{result.batch} samples "
        f"below {sol.stop_mode} tol {sol.tol:.1e} at their selected start (of {result.starts}) "
        f"after {result.nfe} evaluations (worst selected {sol.stop_mode} residual "
        f"{float(result.selected_residual.max()):.2e}); returning the selected states"
    )
    if on_failure == "raise":
        raise NotConvergedError(text)
    warn_at_caller(text, ConvergenceWarning)


def solve_breadth(
    deq: DEQ,
    x: Any,
    starts: int = 8,
    *,
    scale: float = 1.0,
    generator: torch.Generator | None = None,
    start: Start | None = None,
    select: Literal["residual", "vote"] = "residual",
    answer: Answer | None = None,
    solver: str | Solver | None = None,
    tol: float | None = None,
    max_iter: int | None = None,
    on_failure: str | None = None,
) -> BreadthResult:
    """Solve `deq` on `x` from `starts` initial states per sample in one batched call.

    Start 0 is `deq.initial_state(x)` (so `starts=1` is exactly `deq(x)`); starts 1..S-1 are
    that state plus `scale * randn` per tensor part (drawn from `generator`), or `start(x, k)`
    when given (a state of the same structure for the whole batch; then `scale` and `generator`
    are unused). Every tensor of `x` is repeated along its first dimension: row k * batch + i
    of the call is start k of sample i.

    `select="residual"` keeps per sample the start with the lowest residual (the DEQ's
    `stop_mode`); `select="vote"` keeps the majority of `answer(states)` (see
    `BreadthResult.vote`) and, of the starts giving it, the lowest-residual one.
    `solver`, `tol`, `max_iter` override the DEQ's settings for this call as in `deq(...)`;
    `on_failure` ("warn", "raise", "ignore"; default the DEQ's) applies to the selected starts
    only, so a random start that misses the tolerance is no failure. `deq.stats` then describes
    the batched call.

    Example:
        >>> deq = eq.DEQ(eq.cells.TanhCell(8), max_iter=20)  # doctest: +SKIP
        >>> with torch.no_grad():
        ...     result = eq.solve_breadth(deq, torch.randn(4, 8), starts=8)
        >>> result.z.shape, result.residual.shape, result.best.shape
        (torch.Size([4, 8]), torch.Size([8, 4]), torch.Size([4]))
    """
    _check(deq, starts, scale, generator, start, select, answer)
    policy = deq.settings.on_failure
    if on_failure is not None:
        policy = check_choice("on_failure", on_failure, ON_FAILURE)
    options = {"solver": solver, "tol": tol, "max_iter": max_iter, "on_failure": "ignore"}
    if starts == 1:
        out = deq(x, **options)
    else:
        base = deq.initial_state(x, deq.settings.updated(solver=solver).solver)
        batch = StateLayout.of(base, "the DEQ's initial state").batch
        z0 = _initial_states(base, x, starts, float(scale), generator, start)
        out = deq(_repeat(x, starts, batch), z0, **options)
    result = _select(out, deq.stats.forward, starts, answer)
    _report(result, policy)
    return result


def _select(out: State, solution: Solution, starts: int, answer: Answer | None) -> BreadthResult:
    """The result of the batched call `out`: states per start and the selected ones."""
    batch = StateLayout.of(out, "the DEQ's output").batch // starts
    states = _map(out, lambda p: p.reshape(starts, batch, *p.shape[1:]))
    residual = solution.residual.reshape(starts, batch)
    voted = None
    if answer is None:
        best = _lowest(residual)
    else:
        answers = _answers(answer, out, starts, batch)
        best = _vote(answers, residual)
        voted = answers[best.to(answers.device), _samples(best.to(answers.device))]
    return BreadthResult(
        z=_map(states, lambda p: p[best.to(p.device), _samples(best.to(p.device))]),
        states=states,
        residual=residual,
        converged=solution.converged.reshape(starts, batch),
        best=best,
        nfe=solution.nfe,
        solution=solution,
        answer=voted,
    )
