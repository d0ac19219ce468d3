"""PNG figures of a run: training curves, residual per solver iteration, accuracy against NFE."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..files import pyplot, write_figure
from .equilibrium import plot_residuals


def plot_nfe(axis: Any, history: Sequence[Mapping[str, Any]], evaluated: str, label: str) -> None:
    """Train forward / backward NFE per epoch and the forward NFE of the evaluation whose
    record keys start with `evaluated` ("test", "val"), shown as `label`."""
    epochs = [row["epoch"] for row in history]
    axis.plot(epochs, [r["train_forward_nfe"] for r in history], label="train forward")
    axis.plot(epochs, [r["train_backward_nfe"] for r in history], label="train backward")
    axis.plot(epochs, [r[f"{evaluated}_forward_nfe"] for r in history], label=f"{label} forward")
    axis.set(xlabel="epoch", ylabel="evaluations per solve", title="NFE")


def save_figure(plt: Any, figure: Any, axes: Sequence[Any], path: Path) -> None:
    """Grid and legend on every axis, then write `figure` to `path` and close it."""
    for axis in axes:
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    write_figure(figure, path)


def plot_training_curves(
    history: Sequence[Mapping[str, Any]],
    path: Path,
    *,
    tol: float | None = None,
    threshold: float | None = None,
) -> None:
    """Loss, accuracy, and for an equilibrium model forward NFE and the mean residual of the
    training and test solves (with the tolerance `tol` and the warning `threshold`) per epoch."""
    plt = pyplot()
    epochs = [row["epoch"] for row in history]
    has_nfe = any(row.get("train_forward_nfe") is not None for row in history)
    columns = 4 if has_nfe else 2
    figure, axes = plt.subplots(1, columns, figsize=(4.2 * columns, 3.4))
    axes[0].plot(epochs, [r["train_loss"] for r in history], label="train")
    if all("test_loss" in r for r in history):  # a task may test by another measure only
        axes[0].plot(epochs, [r["test_loss"] for r in history], label="test")
    axes[0].set(xlabel="epoch", ylabel="cross-entropy", yscale="log", title="loss")
    axes[1].plot(epochs, [100 * r["train_accuracy"] for r in history], label="train")
    axes[1].plot(epochs, [100 * r["test_accuracy"] for r in history], label="test")
    axes[1].set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    if has_nfe:
        plot_nfe(axes[2], history, "test", "test")
        plot_residuals(axes[3], history, "test", "test", tol=tol, threshold=threshold)
    save_figure(plt, figure, axes, path)


def plot_residual_traces(traces: Mapping[str, Mapping[str, Sequence[float]]], path: Path) -> None:
    """Relative residual (median and quartiles over test images) after each evaluation."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(5.5, 3.8))
    for solver, trace in traces.items():
        steps = range(1, len(trace["median"]) + 1)
        (line,) = axis.plot(steps, trace["median"], label=solver)
        axis.fill_between(steps, trace["q25"], trace["q75"], color=line.get_color(), alpha=0.2)
    axis.set(
        xlabel="function evaluations",
        ylabel="relative residual ||f(z) - z|| / ||f(z)||",
        yscale="log",
        title="residual vs solver iteration (test images)",
    )
    axis.grid(alpha=0.3, which="both")
    axis.legend()
    figure.tight_layout()
    write_figure(figure, path)


def plot_metric_vs_nfe(
    sweeps: Mapping[str, Sequence[Mapping[str, Any]]],
    path: Path,
    *,
    key: str,
    ylabel: str,
    xlabel: str,
    title: str,
    scale: float = 1.0,
) -> None:
    """`scale * row[key]` against the mean forward NFE spent, one line per labelled sweep."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(5.5, 3.8))
    for label, rows in sweeps.items():
        axis.plot(
            [r["forward_nfe"] for r in rows],
            [scale * r[key] for r in rows],
            marker="o",
            label=label,
        )
    axis.set(xlabel=xlabel, ylabel=ylabel, title=title)
    save_figure(plt, figure, [axis], path)


def plot_accuracy_vs_nfe(
    sweeps: Mapping[str, Sequence[Mapping[str, Any]]], path: Path, *, title: str = ""
) -> None:
    """Test accuracy against the mean forward NFE spent, one line per labelled sweep."""
    plot_metric_vs_nfe(
        sweeps,
        path,
        key="accuracy",
        scale=100.0,
        ylabel="test accuracy (%)",
        xlabel="mean forward NFE per test image",
        title=title or "accuracy vs inference compute",
    )
