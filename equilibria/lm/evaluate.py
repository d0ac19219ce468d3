"""Evaluating a saved language model (`equilibria eval`): bits per character and accuracy of
next-character prediction on the run's text, at any solver setting or over a sweep of iteration
caps (with a plot of bits per character against NFE)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import Config, ConfigError
from ..data.text import TextData
from ..extras import require
from ..tasks import EvalRequest, Evaluation
from ..tasks.evaluation import check_solve_options, with_solver
from ..training import distributed
from ..training.plots import plot_metric_vs_nfe
from .engine import evaluate
from .restore import load_language_model, scored_text

SPLITS = {"test": "val", "train": "train"}  # --split -> the split of the text
SPLIT_NAMES = {"val": "validation", "train": "train"}
PLOT = "bpc_vs_nfe.png"


def explicit_model(config: Config) -> str | None:
    """The transformer when it runs no solver; None for the DEQ-Transformer."""
    network = config.lm.network
    return f"an explicit transformer (lm.network={network})" if network != "deq" else None


def score(
    model: nn.Module,
    data: TextData,
    config: Config,
    device: torch.device,
    *,
    split: str,
    batch_size: int,
    solve: dict[str, Any],
    caps: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """Next-character scores of the first `lm.eval_chars` of `split` ("val" or "train"), as the
    run's validation measures them: one row with the `solve` settings, or one per iteration cap
    in `caps` (ascending; `solve` gives the solver and tolerance)."""
    lm = config.lm
    common = dict(
        seq_len=lm.seq_len,
        memory=lm.memory,
        characters=lm.eval_chars,
        batch_size=batch_size,
        device=device,
        precision=config.run.precision,
        split=split,
    )
    if caps is None:
        return [evaluate(model, data, **common, solve=solve)]
    return [
        {"max_iter": cap, **evaluate(model, data, **common, solve={**solve, "max_iter": cap})}
        for cap in sorted(set(caps))
    ]


def row(label: str, result: Mapping[str, Any]) -> str:
    """One printed line: bits per character, accuracy and, for a DEQ, mean NFE and residual."""
    text = f"{label:<22} bits/char {result['bpc']:.4f}  accuracy {100 * result['accuracy']:6.2f}%"
    if result.get("forward_nfe") is not None:
        text += f"  mean NFE {result['forward_nfe']:5.1f}  residual {result['residual']:.2e}"
    return text


def plot_bpc_vs_nfe(
    sweeps: Mapping[str, Sequence[Mapping[str, Any]]], path: Path, *, title: str = ""
) -> None:
    """Bits per character against the mean forward NFE spent, one line per labelled sweep."""
    plot_metric_vs_nfe(
        sweeps,
        path,
        key="bpc",
        ylabel="bits per character",
        xlabel="mean forward NFE per window",
        title=title or "bits per character vs inference compute",
    )


def evaluate_run(request: EvalRequest) -> Evaluation:
    """Score the language model saved at `request.path` as `request` asks."""
    path, sweep = request.path, request.sweep
    if request.data_dir:
        raise ConfigError(
            "--data-dir applies to image classifiers; a language model reads the text file of "
            "its config (lm.text)"
        )
    config, vocab, model = load_language_model(path, request.device, request.checkpoint)
    check_solve_options(path, explicit_model(config), request.solve, sweep)
    if request.plot:
        require("matplotlib", "the bits-per-character-vs-NFE plot")
    data = scored_text(config, vocab, path)
    split = SPLITS[request.split]
    with distributed.session(config.run.device) as runtime:
        if runtime.distributed:
            raise ConfigError("a language model evaluates in one process; launch without torchrun")
        model.to(runtime.device)
        solving = with_solver(request.solve, path, runtime.device)
        rows = score(
            model,
            data,
            config,
            runtime.device,
            split=split,
            batch_size=request.batch_size or config.data.eval_batch_size,
            solve=solving,
            caps=sweep,
        )
    name = SPLIT_NAMES[split]
    deq = config.deq
    tol = next(t for t in (request.solve.get("tol"), deq.eval_tol, deq.tol) if t is not None)
    solver = request.solve.get("solver") or deq.eval_solver or deq.solver

    def plot(folder: Path) -> None:
        plot_bpc_vs_nfe(
            {f"{solver}, tol {tol:g}": rows},
            folder / PLOT,
            title=f"{data.name}: one model, any test-time budget",
        )

    return Evaluation(
        heading=f"{data.name} {name} text, {int(rows[0]['characters']):,} characters",
        rows=rows,
        label=name,
        row_text=row,
        solve=solving,
        record={"split": name},
        plot=plot if sweep else None,
    )
