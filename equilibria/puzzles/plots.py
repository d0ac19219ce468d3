"""The figures of a puzzle run: training curves with the residual panel, accuracy against
test-time iterations per difficulty, and accuracy against the residual a solve reached."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..files import pyplot
from ..training.equilibrium import plot_residuals
from ..training.plots import plot_nfe, save_figure


def plot_puzzle_curves(
    history: Sequence[Mapping[str, Any]], path: Path, *, tol: float, threshold: float
) -> None:
    """Loss and puzzles solved per epoch and, for an equilibrium model, NFE and residual."""
    plt = pyplot()
    epochs = [row["epoch"] for row in history]
    has_nfe = history[-1].get("train_forward_nfe") is not None
    columns = 4 if has_nfe else 2
    figure, axes = plt.subplots(1, columns, figsize=(4.2 * columns, 3.4))
    axes[0].plot(epochs, [r["train_loss"] for r in history], label="train")
    axes[0].set(xlabel="epoch", ylabel="cross-entropy", yscale="log", title="loss")
    axes[1].plot(epochs, [100 * r["train_accuracy"] for r in history], label="train")
    axes[1].plot(epochs, [100 * r["test_accuracy"] for r in history], label="test")
    axes[1].set(xlabel="epoch", ylabel="puzzles solved (%)", title="exact match")
    if has_nfe:
        plot_nfe(axes[2], history, "test", "test")
        plot_residuals(axes[3], history, "test", "test", tol=tol, threshold=threshold)
    save_figure(plt, figure, axes, path)


def plot_accuracy_vs_iterations(
    sweeps: Mapping[str, Sequence[Mapping[str, Any]]], path: Path, *, title: str
) -> None:
    """Puzzles solved against the test-time iteration cap, one line per difficulty."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(5.8, 3.9))
    for label, rows in sweeps.items():
        axis.plot(
            [r["max_iter"] for r in rows],
            [100 * r["accuracy"] for r in rows],
            marker="o",
            label=label,
        )
    axis.set(
        xlabel="test-time iteration cap",
        ylabel="puzzles solved (%)",
        xscale="log",
        ylim=(-3, 103),
        title=title,
    )
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
    for label, rows in binned.items():
        axis.plot(
            [r["residual"] for r in rows],
            [100 * r["accuracy"] for r in rows],
            marker="o",
            label=label,
        )
    axis.axvline(tol, color="0.4", linestyle="--", linewidth=1, label="tolerance")
    axis.set(
        xlabel="relative residual reached",
        ylabel="puzzles solved (%)",
        xscale="log",
        ylim=(-3, 103),
        title="accuracy vs residual",
    )
    save_figure(plt, figure, [axis], path)
