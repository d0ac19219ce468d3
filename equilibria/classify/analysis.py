"""What a trained equilibrium model does with more or less compute at test time.

`elastic_sweep` evaluates one trained model at several iteration caps (accuracy against the
forward NFE actually spent); `residual_traces` records how the residual falls with each solver
iteration on a batch of test images.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..data import ImageData
from ..training.distributed import Runtime
from ..training.step import autocast
from .engine import evaluate

TRACE_SOLVERS = ("picard", "anderson", "broyden")


def elastic_sweep(
    model: nn.Module,
    data: ImageData,
    runtime: Runtime,
    caps: Sequence[int],
    *,
    batch_size: int,
    precision: str = "fp32",
    solver: str | None = None,
    tol: float | None = None,
) -> list[dict[str, Any]]:
    """Test accuracy and mean forward NFE at each iteration cap in `caps` (ascending)."""
    rows = []
    overrides = {k: v for k, v in (("solver", solver), ("tol", tol)) if v is not None}
    for cap in sorted(set(caps)):
        result = evaluate(
            model,
            data,
            data.test,
            runtime,
            batch_size=batch_size,
            precision=precision,
            max_iter=cap,
            **overrides,
        )
        rows.append({"max_iter": cap, **result})
    return rows


@torch.no_grad()
def residual_traces(
    model: nn.Module,
    data: ImageData,
    device: torch.device,
    iterations: int,
    *,
    samples: int = 64,
    solvers: Sequence[str] = TRACE_SOLVERS,
    precision: str = "fp32",
) -> dict[str, dict[str, list[float]]]:
    """Per solver: the median and quartiles over test images of the relative residual after each
    evaluation, from a solve run for exactly `iterations` evaluations (tolerance 0)."""
    model.eval()
    x = data.inputs(data.test.images[:samples], device)
    traces = {}
    for solver in solvers:
        with autocast(device, precision):
            model(x, solver=solver, tol=0.0, max_iter=iterations)
        trace = model.stats.forward.rel_trace.float().cpu()
        low, median, high = torch.quantile(trace, torch.tensor([0.25, 0.5, 0.75]), dim=1)
        traces[solver] = {
            "median": median.tolist(),
            "q25": low.tolist(),
            "q75": high.tolist(),
        }
    return traces
