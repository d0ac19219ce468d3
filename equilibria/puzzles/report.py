"""After training: every test difficulty over a sweep of test-time budgets (depth), the hardest
one from several starts (breadth, with path independence), the plots, a picture of answers and
`summary.json`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..config import Config
from ..files import write_json
from ..training.equilibrium import equilibrium_summary
from ..training.metrics import history_mean
from ..training.plots import plot_training_curves
from ..training.summary import SUMMARY, machine
from .data.pictures import draw_puzzles
from .evaluate import Scores, score, test_cap
from .model import PuzzleModel, parameter_count
from .plots import (
    plot_accuracy_vs_iterations,
    plot_accuracy_vs_residual,
    residual_bins,
)
from .setup import PuzzleData, explicit_model, training_cap

# budgets of the sweep, as fractions of the test cap (each halving the one after: the whole sweep
# costs about twice the test cap's solve)
SWEEP_FRACTIONS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 1)
# puzzles of the hardest difficulty solved from several starts (each start costs a solve)
BREADTH_PUZZLES = 32
PICTURED = 8


def sweep_caps(cap: int) -> list[int]:
    """The caps of a sweep up to `cap` (distinct, at least 1)."""
    return sorted({max(1, round(cap * fraction)) for fraction in SWEEP_FRACTIONS})


def depth_sweep(
    model: PuzzleModel, data: PuzzleData, config: Config, device: torch.device, size: int
) -> tuple[list[dict[str, Any]], Scores]:
    """Rows of the test puzzles of `size` at each cap of the sweep, and the scores at the
    largest (an explicit feed-forward network has one row: its depth)."""
    puzzles = data.tests[size]
    batch = config.data.eval_batch_size
    if model.network == "feedforward":
        caps: list[int | None] = [None]
    else:
        caps = list(sweep_caps(test_cap(config, size, data.spec)))
    rows, scores = [], Scores()
    for cap in caps:
        scores = score(model, data.family, puzzles, device, cap=cap, batch_size=batch)
        rows.append(scores.row(cap, 1))
    return rows, scores


def at_depth(
    model: PuzzleModel, data: PuzzleData, config: Config, device: torch.device
) -> dict[str, Any] | None:
    """The tied network's rows at its own depth, the fixed number of applications it is
    (`tests` and the sweeps iterate it as long as the DEQ's test cap); None for the others."""
    if model.network != "tied":
        return None
    batch = config.data.eval_batch_size
    return {
        str(size): score(model, data.family, puzzles, device, cap=None, batch_size=batch).row(
            model.depth, 1
        )
        for size, puzzles in data.tests.items()
    }


def breadth_rows(
    model: PuzzleModel, data: PuzzleData, config: Config, device: torch.device, size: int
) -> dict[str, Any] | None:
    """The first `BREADTH_PUZZLES` puzzles of `size` from 1 start and from puzzles.breadth
    starts at the test cap per start, kept by residual and by vote (None: an explicit network
    or a breadth of 1)."""
    starts = config.puzzles.breadth
    if model.network != "deq" or starts <= 1:
        return None
    puzzles = data.tests[size].subset(range(min(BREADTH_PUZZLES, len(data.tests[size]))))
    common = dict(
        cap=test_cap(config, size, data.spec),
        batch_size=config.data.eval_batch_size,
        scale=config.puzzles.start_scale or 1.0,
    )
    rows = {
        "size": size,
        "one": score(model, data.family, puzzles, device, **common).row(common["cap"], 1),
    }
    for select in ("residual", "vote"):
        generator = torch.Generator().manual_seed(config.run.seed)
        scores = score(
            model,
            data.family,
            puzzles,
            device,
            starts=starts,
            select=select,
            generator=generator,
            **common,
        )
        rows[select] = scores.row(common["cap"], starts)
    return rows


def finalize(
    config: Config,
    data: PuzzleData,
    model: PuzzleModel,
    out: Path,
    history: list[dict],
    seconds: float,
) -> dict[str, Any]:
    """Test, plot and write the summary of a finished puzzle run; returns the summary."""
    device = next(model.parameters()).device
    family, sizes = data.family, data.sizes
    sweeps, final_scores = {}, {}
    for size in sizes.test:
        sweeps[size], final_scores[size] = depth_sweep(model, data, config, device, size)
    hardest = data.spec.hardest(sizes.test)
    breadth = breadth_rows(model, data, config, device, hardest)
    final = history[-1]
    tests = {str(size): rows[-1] for size, rows in sweeps.items()}
    summary = {
        "family": family.name,
        "network": config.puzzles.network,
        "explicit": explicit_model(config),
        "train_size": sizes.train,
        "hardest_size": hardest,
        "test_sizes": list(sizes.test),
        "train_description": family.description(sizes.train),
        "tests": tests,
        "tests_at_depth": at_depth(model, data, config, device),
        "sweeps": {str(size): rows for size, rows in sweeps.items()},
        "breadth": breadth,
        "train_accuracy": final["train_accuracy"],
        "train_cap": training_cap(config),
        "train_mean_forward_nfe": history_mean(history, "train_forward_nfe"),
        "equilibrium": equilibrium_summary(history, "test", config.deq.residual_warning),
        "parameters": parameter_count(model),
        "train_puzzles": len(data.train),
        "test_puzzles": config.puzzles.test_puzzles,
        "train_seconds": seconds,
        "epochs": final["epoch"],
        "steps": final["step"],
        "device": str(device),
        "machine": machine(),
    }
    _plots(config, data, model, out, history, sweeps, final_scores, device)
    write_json(out / SUMMARY, summary)
    return summary


def _plots(
    config: Config,
    data: PuzzleData,
    model: PuzzleModel,
    out: Path,
    history: list[dict],
    sweeps: dict[int, list[dict[str, Any]]],
    scores: dict[int, Scores],
    device: torch.device,
) -> None:
    """The run's figures: curves, accuracy against iterations and against residual, and the
    hardest difficulty's first puzzles with the answers given."""
    family = data.family
    deq = config.deq
    tol = deq.eval_tol if deq.eval_tol is not None else deq.tol
    plot_training_curves(history, out / "curves.png", tol=deq.tol, threshold=deq.residual_warning)
    labels = {size: family.description(size) for size in sweeps}
    if model.network != "feedforward":
        plot_accuracy_vs_iterations(
            {labels[size]: rows for size, rows in sweeps.items()},
            out / "accuracy_vs_iterations.png",
            title=f"trained on {family.description(data.sizes.train)}",
        )
    if model.network == "deq":
        binned = {labels[size]: residual_bins(s.residual, s.solved) for size, s in scores.items()}
        plot_accuracy_vs_residual(binned, out / "accuracy_vs_residual.png", tol=tol)
    hardest = data.spec.hardest(sweeps)
    puzzles = data.tests[hardest].subset(range(min(PICTURED, len(data.tests[hardest]))))
    answers = torch.cat(scores[hardest].answers)[: len(puzzles)]
    draw_puzzles(
        family.name,
        puzzles.inputs,
        answers,
        puzzles.targets,
        out / "puzzles.png",
        title=f"{labels[hardest]}: answers at the test cap",
    )
