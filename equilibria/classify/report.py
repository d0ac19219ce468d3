"""After training: the elastic-inference sweep, residual traces, plots and `summary.json`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ..config import Config
from ..data import ImageData
from ..files import write_json
from ..training.distributed import Runtime
from ..training.equilibrium import equilibrium_summary
from ..training.metrics import history_mean
from ..training.plots import plot_accuracy_vs_nfe, plot_residual_traces, plot_training_curves
from ..training.summary import SUMMARY, machine
from .analysis import elastic_sweep, residual_traces


def finalize(
    config: Config,
    data: ImageData,
    model: nn.Module,
    runtime: Runtime,
    out: Path,
    history: list[dict[str, Any]],
    train_seconds: float,
) -> dict[str, Any] | None:
    """Sweep, trace, plot and write the summary; returns it on rank 0 (None elsewhere)."""
    run = config.run
    is_deq = getattr(model, "stats", None) is not None
    sweep = (
        elastic_sweep(
            model,
            data,
            runtime,
            run.sweep,
            batch_size=config.data.eval_batch_size,
            precision=run.precision,
        )
        if is_deq
        else []
    )
    if not runtime.is_main:
        return None
    final = history[-1]
    summary = {
        "test_accuracy": final["test_accuracy"],
        "test_loss": final["test_loss"],
        "mean_forward_nfe": final.get("test_forward_nfe"),
        "test_residual": final.get("test_residual"),
        "test_converged": final.get("test_converged"),
        "equilibrium": equilibrium_summary(history, "test", config.deq.residual_warning),
        "train_seconds": train_seconds,
        "epochs": final["epoch"],
        "steps": final["step"],
        "train_accuracy": final["train_accuracy"],
        "train_mean_forward_nfe": history_mean(history, "train_forward_nfe"),
        "train_mean_backward_nfe": history_mean(history, "train_backward_nfe"),
        "parameters": sum(p.numel() for p in model.parameters()),
        "model": config.model.arch,
        "dataset": data.name,
        "data": data.description,
        "train_samples": len(data.train),
        "test_samples": len(data.test),
        "world_size": runtime.world_size,
        "device": str(runtime.device),
        "machine": machine(),
        "elastic": sweep,
    }
    plot_training_curves(
        history, out / "curves.png", tol=config.deq.tol, threshold=config.deq.residual_warning
    )
    if is_deq:
        traces = residual_traces(
            model, data, runtime.device, run.trace_iters, precision=run.precision
        )
        summary["residual_traces"] = traces
        plot_residual_traces(traces, out / "residuals.png")
        deq = config.deq
        tol = deq.tol if deq.eval_tol is None else deq.eval_tol
        label = f"{deq.eval_solver or deq.solver}, tol {tol:g}"
        plot_accuracy_vs_nfe(
            {label: sweep},
            out / "accuracy_vs_nfe.png",
            title=f"{data.name}: one trained MDEQ, any test-time budget",
        )
    write_json(out / SUMMARY, summary)
    return summary
