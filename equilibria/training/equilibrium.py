"""Whether a run stayed at its fixed point: the residual warning of an epoch, the residual panel
of the curves plot and the `equilibrium` entry of `summary.json`.

A solve cut at its cap is not an equilibrium, and the implicit gradient taken there is not the
gradient of anything the model computes; a run whose training residual grows says so instead of
reporting its accuracy as if nothing were wrong.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# where an epoch record keeps its training solves' mean residual (the contrastive task solves
# two views, each with its own)
TRAIN_RESIDUALS = ("train_residual", "first_residual", "second_residual")


def training_residual(record: Mapping[str, Any]) -> float | None:
    """The largest mean residual of the epoch's training solves (None: the model solves none)."""
    values = [record[key] for key in TRAIN_RESIDUALS if record.get(key) is not None]
    return max(values) if values else None


def residual_warning(record: Mapping[str, Any], threshold: float) -> str | None:
    """The warning of an epoch whose mean training residual is above `threshold` (0: never)."""
    residual = training_residual(record)
    if not threshold or residual is None or residual <= threshold:
        return None
    return (
        f"training solves are not at equilibrium (mean residual {residual:.1e} > "
        f"{threshold:.0e}): raise deq.max_iter, or add deq.jacobian_gamma or deq.init=joint"
    )


def equilibrium_summary(
    history: Sequence[Mapping[str, Any]], evaluated: str, threshold: float
) -> dict[str, Any] | None:
    """The `equilibrium` entry of a summary: the training residual at the start, its peak and
    its end, the last evaluation's residual and converged fraction (`evaluated` is the prefix of
    its keys: "test", "val"), and the epochs that warned. None for a model without solves."""
    residuals = [training_residual(row) for row in history]
    if not history or any(r is None for r in residuals):
        return None
    final = history[-1]
    warned = [row["epoch"] for row in history if residual_warning(row, threshold)]
    worst = history[residuals.index(max(residuals))]
    return {
        "train_residual_first": residuals[0],
        "train_residual_max": max(residuals),
        "train_residual_final": residuals[-1],
        f"{evaluated}_residual": final.get(f"{evaluated}_residual"),
        f"{evaluated}_converged": final.get(f"{evaluated}_converged"),
        "warning_threshold": threshold,
        "warned_epochs": warned,
        "warning": f"{residual_warning(worst, threshold)} (epochs {warned})" if warned else None,
    }


def plot_residuals(
    axis: Any,
    history: Sequence[Mapping[str, Any]],
    evaluated: str,
    label: str,
    *,
    tol: float | None = None,
    threshold: float | None = None,
) -> None:
    """Mean relative residual per epoch of the training solves and of the evaluation whose keys
    start with `evaluated`, on a log scale, with the solver tolerance and the warning threshold."""
    epochs = [row["epoch"] for row in history]
    axis.plot(epochs, [training_residual(r) for r in history], label="train")
    evaluated_key = f"{evaluated}_residual"
    if all(r.get(evaluated_key) is not None for r in history):
        axis.plot(epochs, [r[evaluated_key] for r in history], label=label)
    reference_lines(axis, tol=tol, threshold=threshold)
    axis.set(xlabel="epoch", ylabel="mean residual", yscale="log", title="residual")


def reference_lines(axis: Any, *, tol: float | None, threshold: float | None) -> None:
    """The solver tolerance and the warning threshold as horizontal lines of a residual plot."""
    if tol:
        axis.axhline(tol, color="0.4", linestyle="--", linewidth=1, label="tolerance")
    if threshold:
        axis.axhline(threshold, color="tab:red", linestyle=":", linewidth=1, label="warning")
