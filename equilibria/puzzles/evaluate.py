"""Scoring a puzzle network: exact-match accuracy at a test-time budget (depth), from several
starts (breadth), over a sweep of budgets, and how far its answers depend on where the solve
started (path independence).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..breadth import solve_breadth
from ..config import Config
from .data import PuzzleSet
from .model import PuzzleModel


@dataclass
class Scores:
    """Per-puzzle results of one evaluation: solved or not, the residual and NFE its solve
    reached (None for an explicit network), and the answers given."""

    solved: list[bool] = field(default_factory=list)
    residual: list[float] = field(default_factory=list)
    converged: list[bool] = field(default_factory=list)
    agreement: list[bool] = field(default_factory=list)
    nfe: list[int] = field(default_factory=list)
    answers: list[torch.Tensor] = field(default_factory=list)

    def row(self, cap: int | None, starts: int) -> dict[str, Any]:
        """The means of an evaluation, as an eval row."""
        count = max(len(self.solved), 1)
        row: dict[str, Any] = {
            "accuracy": sum(self.solved) / count,
            "solved": sum(self.solved),
            "puzzles": len(self.solved),
            "max_iter": cap,
            "starts": starts,
        }
        if self.residual:
            row.update(
                forward_nfe=sum(self.nfe) / len(self.nfe),
                residual=sum(self.residual) / count,
                median_residual=float(torch.tensor(self.residual).median()),
                converged=sum(self.converged) / count,
            )
        else:
            row.update(forward_nfe=None, residual=None, converged=None)
        if self.agreement:
            row["path_independence"] = sum(self.agreement) / len(self.agreement)
        return row


def test_cap(config: Config, difficulty: int, spec: Any) -> int:
    """The test-time iteration cap at `difficulty` (puzzles.test_iterations x the family's
    unit of budget)."""
    return spec.cap(difficulty, config.puzzles.test_iterations)


@torch.no_grad()
def score(
    model: PuzzleModel,
    family: Any,
    puzzles: PuzzleSet,
    device: torch.device,
    *,
    cap: int | None,
    batch_size: int,
    starts: int = 1,
    select: str = "residual",
    scale: float = 1.0,
    solve: dict[str, Any] | None = None,
    generator: torch.Generator | None = None,
) -> Scores:
    """Solve every puzzle of `puzzles` (batches of `batch_size`) with at most `cap` iterations
    (the tied network: `cap` applications; None: its training depth), from `starts` starts
    (the first from zeros, the others Gaussian of `scale`, kept by `select`)."""
    model.eval()
    scores = Scores()
    solve = {k: v for k, v in (solve or {}).items() if v is not None}
    for first in range(0, len(puzzles), batch_size):
        part = puzzles.subset(range(first, min(first + batch_size, len(puzzles))))
        inputs, targets = part.inputs.to(device), part.targets.to(device)
        if model.network != "deq":
            answer = model.answer(model.state(inputs, max_iter=cap), inputs)
        elif starts == 1:
            answer = model.answer(model.state(inputs, max_iter=cap, **solve), inputs)
            stats = model.stats
            scores.residual += stats.forward.residual.float().tolist()
            scores.converged += stats.converged.tolist()
            scores.nfe += [stats.forward_nfe] * len(part)
        else:
            answer = _breadth(model, inputs, cap, starts, select, scale, solve, generator, scores)
        scores.solved += family.exact_match(answer.cpu(), targets.cpu()).tolist()
        scores.answers.append(answer.cpu())
    return scores


def _breadth(
    model: PuzzleModel,
    inputs: torch.Tensor,
    cap: int | None,
    starts: int,
    select: str,
    scale: float,
    solve: dict[str, Any],
    generator: torch.Generator | None,
    scores: Scores,
) -> torch.Tensor:
    """The answers kept from `starts` solves of each puzzle (residual or vote), recording the
    kept solves' residuals and whether every start gave the same answer."""
    u = model.embed(inputs)
    repeated = inputs.repeat(starts, *([1] * (inputs.dim() - 1)))

    def answer_of(states: torch.Tensor) -> torch.Tensor:
        return model.answer(states, repeated)

    result = solve_breadth(
        model.deq,
        u,
        starts,
        scale=scale,
        generator=generator,
        select=select,
        answer=answer_of if select == "vote" else None,
        max_iter=cap,
        on_failure="ignore",
        **solve,
    )
    answers = result.answers(answer_of)  # (starts, batch, ...)
    same = (answers == answers[:1]).flatten(2).all(dim=2).all(dim=0)
    scores.agreement += same.tolist()
    scores.residual += result.selected_residual.float().tolist()
    scores.converged += result.selected_converged.tolist()
    scores.nfe += [result.nfe] * len(inputs)
    if result.answer is not None:
        return result.answer
    return model.answer(result.z, inputs)


def evaluate(
    model: PuzzleModel,
    data: Any,
    puzzles: PuzzleSet,
    config: Config,
    device: torch.device,
    **options: Any,
) -> dict[str, Any]:
    """The row of `puzzles` at their difficulty's test cap (`options` as for `score`)."""
    cap = options.pop("cap", None)
    if model.network == "deq" and cap is None:
        cap = test_cap(config, puzzles.difficulty, data.spec)
    batch_size = options.pop("batch_size", None) or config.data.eval_batch_size
    scores = score(model, data.family, puzzles, device, cap=cap, batch_size=batch_size, **options)
    return scores.row(cap, options.get("starts", 1))
