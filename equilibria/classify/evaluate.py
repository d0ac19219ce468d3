"""Evaluating a saved image classifier (`equilibria eval`): test accuracy at any solver setting,
or over a sweep of iteration caps (with a plot of accuracy against NFE)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..config import Config
from ..data import load_data
from ..extras import require, require_installed
from ..models import build_model
from ..tasks import EvalRequest, Evaluation
from ..tasks.evaluation import check_solve_options, with_solver
from ..training import distributed
from ..training.checkpoint import restore_model, stored_config
from ..training.plots import plot_accuracy_vs_nfe
from .analysis import elastic_sweep
from .engine import evaluate
from .setup import explicit_model


def row_text(label: str, result: Mapping[str, Any]) -> str:
    """One printed line: accuracy and loss and, for a DEQ, mean NFE, residual and converged."""
    text = f"{label:<22} accuracy {100 * result['accuracy']:6.2f}%  loss {result['loss']:.4f}"
    if result.get("forward_nfe") is not None:
        text += (
            f"  mean NFE {result['forward_nfe']:5.1f}  residual {result['residual']:.2e}"
            f"  converged {100 * result['converged']:5.1f}%"
        )
    return text


def _config(request: EvalRequest) -> Config:
    config = stored_config(request.path, request.checkpoint)
    overrides = []
    if request.device:
        overrides.append(f"run.device={request.device}")
    if request.data_dir:
        overrides.append(f"data.data_dir={request.data_dir}")
    return config.override(overrides)


def evaluate_run(request: EvalRequest) -> Evaluation:
    """Test the classifier saved at `request.path` as `request` asks."""
    path, checkpoint, sweep = request.path, request.checkpoint, request.sweep
    config = _config(request)
    check_solve_options(path, explicit_model(config), request.solve, sweep)
    if config.data.dataset == "digits":
        require_installed("sklearn", "the digits data set")
    if request.plot:
        require("matplotlib", "the accuracy-vs-NFE plot")
    with distributed.session(config.run.device) as runtime:
        data = load_data(config.data.dataset, config.data.data_dir, download=config.data.download)
        model = build_model(config, data.shape, data.classes)
        weights = checkpoint.get("average") or checkpoint["model"]
        restore_model(model, weights, str(path))
        model.to(runtime.device)
        solving = with_solver(request.solve, path, runtime.device)
        batch_size = request.batch_size or config.data.eval_batch_size
        split = data.test if request.split == "test" else data.train
        common = dict(batch_size=batch_size, precision=config.run.precision)
        if sweep:
            rows = elastic_sweep(
                model,
                data,
                runtime,
                sweep,
                solver=solving.get("solver"),
                tol=solving.get("tol"),
                **common,
            )
        else:
            rows = [evaluate(model, data, split, runtime, **common, **solving)]
    solver = request.solve.get("solver") or config.deq.eval_solver or config.deq.solver

    def plot(folder: Path) -> None:
        plot_accuracy_vs_nfe({solver: rows}, folder / "accuracy_vs_nfe.png")

    return Evaluation(
        heading=f"{data.name} {request.split if not sweep else 'test'}",
        rows=rows,
        label=request.split,
        row_text=row_text,
        solve=solving,
        plot=plot if sweep else None,
        is_main=runtime.is_main,
    )
