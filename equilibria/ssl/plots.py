"""The figure of a contrastive run: loss, pairs found, each view's solve, probe accuracy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..training.equilibrium import reference_lines
from ..training.plots import pyplot, save_figure


def plot_contrastive_curves(
    history: Sequence[Mapping[str, Any]],
    path: Path,
    *,
    init_probe: float | None = None,
    tol: float | None = None,
    threshold: float | None = None,
) -> None:
    """Per epoch: NT-Xent loss, the share of positives found, and for an equilibrium backbone the
    residual each view's solve reached (with the solver tolerance `tol` and the warning
    `threshold`); linear-probe test accuracy where it was measured."""
    plt = pyplot()
    epochs = [row["epoch"] for row in history]
    solves = "first_residual" in history[0]
    columns = 3 if solves else 2
    figure, axes = plt.subplots(1, columns, figsize=(4.2 * columns, 3.4))
    axes[0].plot(epochs, [r["train_loss"] for r in history], label="NT-Xent (train)")
    axes[0].set(xlabel="epoch", ylabel="loss", title="contrastive loss")
    accuracy = axes[1]
    accuracy.plot(
        epochs, [100 * r["train_contrastive_accuracy"] for r in history], label="pairs found"
    )
    probed = [(r["epoch"], r["probe_test_accuracy"]) for r in history if "probe_test_accuracy" in r]
    if init_probe is not None:
        probed.insert(0, (0, init_probe))
    if probed:
        accuracy.plot(
            [e for e, _ in probed], [100 * a for _, a in probed], marker="o", label="linear probe"
        )
    accuracy.set(xlabel="epoch", ylabel="%", title="accuracy")
    if solves:
        axes[2].plot(epochs, [r["first_residual"] for r in history], label="view 1 (from zeros)")
        axes[2].plot(epochs, [r["second_residual"] for r in history], label="view 2")
        reference_lines(axes[2], tol=tol, threshold=threshold)
        axes[2].set(xlabel="epoch", ylabel="relative residual", yscale="log", title="solves")
    save_figure(plt, figure, axes, path)
