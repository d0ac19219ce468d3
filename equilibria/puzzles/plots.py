"""The figures of a puzzle run beyond the training curves: accuracy against test-time
iterations per difficulty, and accuracy against the residual a solve reached."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..files import pyplot
from ..training.plots import save_figure


def _solved_lines(lines: Mapping[str, Sequence[Mapping[str, Any]]], x: str, axis: Any) -> None:
    """Puzzles solved (%) against `x`, one labelled line per entry of `lines`, log x-axis."""
    for label, rows in lines.items():
        axis.plot(
            [r[x] for r in rows], [100 * r["accuracy"] for r in rows], marker="o", label=label
        )
    axis.set(ylabel="puzzles solved (%)", xscale="log", ylim=(-3, 103))


def plot_accuracy_vs_iterations(
    sweeps: Mapping[str, Sequence[Mapping[str, Any]]], path: Path, *, title: str
) -> None:
    """Puzzles solved against the test-time iteration cap, one line per difficulty."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(5.8, 3.9))
    _solved_lines(sweeps, "max_iter", axis)
    axis.set(xlabel="test-time iteration cap", title=title)
    save_figure(plt, figure, [axis], path)


def residual_bins(
    residuals: Sequence[float], solved: Sequence[bool], bins: int = 8
) -> list[dict[str, float]]:
    """Puzzles grouped by the residual their solve reached (equal steps of log10): per group its
    middle residual, its count and the fraction solved."""
    pairs = [(r, s) for r, s in zip(residuals, solved, strict=True) if r > 0 and math.isfinite(r)]
    if not pairs:
        return []
    logs = [math.log10(r) for r, _ in pairs]
    low, high = min(logs), max(logs)
    width = (high - low) / bins or 1.0
    groups: dict[int, list[bool]] = {}
    for value, (_, good) in zip(logs, pairs, strict=True):
        groups.setdefault(min(int((value - low) / width), bins - 1), []).append(good)
    return [
        {
            "residual": 10 ** (low + (k + 0.5) * width),
            "count": len(members),
            "accuracy": sum(members) / len(members),
        }
        for k, members in sorted(groups.items())
    ]


def plot_accuracy_vs_residual(
    binned: Mapping[str, Sequence[Mapping[str, float]]], path: Path, *, tol: float
) -> None:
    """Puzzles solved against the residual their solve reached, one line per difficulty: a
    converged solve is an answer the model stands by, an unconverged one is a guess."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(5.8, 3.9))
    _solved_lines(binned, "residual", axis)
    axis.axvline(tol, color="0.4", linestyle="--", linewidth=1, label="tolerance")
    axis.set(xlabel="relative residual reached", title="accuracy vs residual")
    save_figure(plt, figure, [axis], path)
