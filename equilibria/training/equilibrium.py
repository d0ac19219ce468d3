"""Whether a run stayed at its fixed point: the residual warnings of an epoch, the residual
panel of the curves plot and the `equilibrium` entry of `summary.json`.

A solve cut at its cap is not an equilibrium, and the implicit gradient taken there is not the
gradient of anything the model computes; a run whose training residual grows says so instead of
reporting its accuracy as if nothing were wrong. The same holds for the adjoint solve of an
implicit backward: one stopped above its tolerance gives an approximate gradient, and the run
says so.
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


def adjoint_warning(record: Mapping[str, Any]) -> str | None:
    """The warning of an epoch in which adjoint solves stopped above their tolerance (None:
    every one reached it, or no adjoint solve ran)."""
    converged = record.get("train_adjoint_converged")
    if converged is None or converged >= 1:
        return None
    return (
        f"adjoint solves stopped above their tolerance ({100 * converged:.0f}% of samples "
        f"reached it, mean residual {record['train_adjoint_residual']:.1e}): the implicit "
        "gradients are approximate; raise deq.backward_max_iter or set deq.backward_solver"
    )


def epoch_warnings(record: Mapping[str, Any], threshold: float) -> list[str]:
    """Every warning of an epoch: the forward solves' residual, then the adjoint's."""
    found = (residual_warning(record, threshold), adjoint_warning(record))
    return [warning for warning in found if warning is not None]


def adjoint_parts(record: Mapping[str, Any]) -> list[str]:
    """The epoch line's part about the adjoint solves (none when no adjoint solve ran)."""
    if record.get("train_adjoint_residual") is None:
        return []
    return [
        f"adjoint res {record['train_adjoint_residual']:.1e} "
        f"({100 * record['train_adjoint_converged']:.0f}% solved)"
    ]


def _adjoint_summary(history: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The adjoint's entries of the `equilibrium` summary (none without adjoint solves)."""
    solved = [row for row in history if row.get("train_adjoint_residual") is not None]
    if not solved:
        return {}
    warnings = {row["epoch"]: adjoint_warning(row) for row in solved}
    warned = [epoch for epoch, warning in warnings.items() if warning]
    return {
        "adjoint_residual_max": max(row["train_adjoint_residual"] for row in solved),
        "adjoint_residual_final": solved[-1]["train_adjoint_residual"],
        "adjoint_converged_final": solved[-1]["train_adjoint_converged"],
        "adjoint_warned_epochs": warned,
        "adjoint_warning": f"{warnings[warned[-1]]} (epochs {warned})" if warned else None,
    }


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
        **_adjoint_summary(history),
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
    adjoint = [r.get("train_adjoint_residual") for r in history]
    if any(value is not None for value in adjoint):
        axis.plot(epochs, adjoint, label="train adjoint", linestyle="-.")
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
