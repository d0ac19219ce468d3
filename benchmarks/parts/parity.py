"""Training parity with TorchDEQ on users' cells (see `benchmarks.parity` for what is trained)."""

from __future__ import annotations

import math
import statistics

from ..config import BenchConfig
from ..parity import (
    LIBRARIES,
    RunResult,
    SolveCaps,
    Task,
    run_task,
    spectrum_during_training,
    tasks,
)
from ..plots import line_plot
from ..registry import register
from ..report import Check, Column, Figure, Section, Table

TIME_TARGET = 0.75  # equilibria's training time at most this multiple of TorchDEQ's
TIME_GOAL = 0.6


def mean_and_error(values: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (0 for a single value)."""
    mean = statistics.fmean(values)
    error = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return mean, error


@register(
    "parity",
    "Training parity with TorchDEQ 0.1.0 on users' cells",
    order=120,
    requires=("torchdeq", "sklearn"),
)
def run_part(config: BenchConfig) -> Section:
    if config.device != "cpu":
        raise ValueError("the parity benchmark runs on the CPU only (thread CPU time)")
    caps = SolveCaps()
    seeds = [config.seed + i for i in range(2 if config.quick else 3)]
    section = Section("parity", "Training parity with TorchDEQ 0.1.0 on users' cells")
    section.summary = (
        "Each cell is trained by both libraries from the same initial weights on the same "
        "batches, with the same forward solver (Anderson), tolerance, caps and test-time "
        "settings; equilibria uses its default implicit backward `eq.Implicit(max_iter=...)`, "
        "TorchDEQ its implicit backward (`ift=True`) with Anderson on the adjoint. Metric: test "
        "accuracy (higher is better) or validation bits per character (lower is better), mean "
        "+- standard error over seeds. Time: thread CPU time of training (1 thread), mean over "
        "seeds; the ratio is the mean of per-seed ratios. NFE per training step: forward = cell "
        "calls of the forward solve, backward = vector-Jacobian products of the adjoint solve. "
        "Residual: mean relative residual of the training solves in the last epoch; converged: "
        "fraction of test solves below the tolerance."
    )
    section.settings = {
        "seeds": ", ".join(map(str, seeds)),
        "forward": f"anderson, rel tol {caps.tol:g}, cap {caps.max_iter}",
        "backward": f"implicit, cap {caps.backward_max_iter}, tol {caps.tol:g}",
        "optimizer": "Adam, batch 32",
    }
    table = Table(
        "Users' cells trained by both libraries",
        [
            Column("task", "cell"),
            Column("library", "library"),
            Column("metric", "metric"),
            Column("score", "mean +- s.e."),
            Column("per_seed", "per seed"),
            Column("seconds", "train s", ".1f"),
            Column("time_ratio", "time / TorchDEQ", ".2f"),
            Column("forward_nfe", "fwd NFE", ".1f"),
            Column("backward_nfe", "bwd NFE", ".1f"),
            Column("residual", "train residual", ".3g"),
            Column("converged", "test converged", ".2f"),
        ],
    )
    section.tables.append(table)
    for task in tasks(config.quick):
        results = run_task(task, seeds, caps)
        add_rows(table, task, results)
        section.checks.extend(checks(task, results))
        section.notes.append(
            f"{task.name}: {task.description}; {task.epochs} epoch(s), lr {task.lr:g}"
        )
    return section


def _time_ratio(results: dict[str, list[RunResult]]) -> float:
    ours, theirs = (results[library] for library in LIBRARIES)
    return statistics.fmean(
        a.train_seconds / b.train_seconds for a, b in zip(ours, theirs, strict=True)
    )


def add_rows(table: Table, task: Task, results: dict[str, list[RunResult]]) -> None:
    digits = 1 if task.metric == "accuracy" else 3
    scale = 100 if task.metric == "accuracy" else 1
    for library in LIBRARIES:
        runs = results[library]
        mean, error = mean_and_error([r.metric * scale for r in runs])
        table.add(
            task=task.name,
            library=library,
            metric="accuracy %" if task.metric == "accuracy" else task.metric,
            score=f"{mean:.{digits}f} +- {error:.{digits}f}",
            per_seed=", ".join(f"{r.metric * scale:.{digits}f}" for r in runs),
            seconds=statistics.fmean(r.train_seconds for r in runs),
            time_ratio=_time_ratio(results) if library == "equilibria" else 1.0,
            forward_nfe=statistics.fmean(r.forward_nfe for r in runs),
            backward_nfe=statistics.fmean(r.backward_nfe for r in runs),
            residual=statistics.fmean(r.train_residual for r in runs),
            converged=statistics.fmean(r.test_converged for r in runs),
        )


def checks(task: Task, results: dict[str, list[RunResult]]) -> list[Check]:
    """The metric at least the peer's within one standard error, and the time targets."""
    ours, error_ours = mean_and_error([r.metric for r in results["equilibria"]])
    theirs, error_theirs = mean_and_error([r.metric for r in results["torchdeq"]])
    error = math.hypot(error_ours, error_theirs)
    higher_better = task.metric == "accuracy"
    gap = ours - theirs if higher_better else theirs - ours
    claim = "accuracy at least" if higher_better else f"{task.metric} at most"
    ratio = _time_ratio(results)
    return [
        Check(
            f"{task.name}: mean {claim} TorchDEQ's (within one standard error)",
            f"{ours:.4g} vs {theirs:.4g} (s.e. of the difference {error:.2g})",
            gap >= -error,
        ),
        Check(
            f"{task.name}: training time at most {TIME_TARGET:g}x TorchDEQ's (goal {TIME_GOAL:g}x)",
            f"{ratio:.2f}x",
            ratio <= TIME_TARGET,
        ),
    ]


def seed_mean(curves: list[list[float]]) -> list[float]:
    """The pointwise mean of equally long per-seed curves."""
    return [statistics.fmean(values) for values in zip(*curves, strict=True)]


SPECTRUM_VARIANTS = (
    "equilibria",
    "equilibria, adjoint damping 0.5",
    "equilibria, Anderson adjoint",
    "torchdeq",
)


@register(
    "parity-spectrum",
    "Why the adjoint's solver matters: the cell's spectrum as training goes on",
    order=121,
    requires=("torchdeq", "sklearn", "matplotlib"),
)
def run_spectrum_part(config: BenchConfig) -> Section:
    if config.device != "cpu":
        raise ValueError("the parity benchmark runs on the CPU only")
    caps = SolveCaps()
    task = tasks(config.quick)[0]
    seeds = [config.seed + i for i in range(1 if config.quick else 2)]
    traces = {
        variant: [spectrum_during_training(task, seed, variant, caps) for seed in seeds]
        for variant in SPECTRUM_VARIANTS
    }
    section = Section(
        "parity-spectrum",
        "Why the adjoint's solver matters: the cell's spectrum as training goes on",
    )
    section.summary = (
        f"The {task.name} cell trained as in the parity table by equilibria (default adjoint: "
        "damped fixed-point iteration, damping 0.3), by equilibria with damping 0.5 or with "
        "Anderson on the adjoint (the default before), and by TorchDEQ. After every epoch, on "
        "32 fixed training images: the spectral radius of the cell's Jacobian at the output "
        "of a training-mode solve (Anderson, the same caps; `eq.spectral_radius`, 60 block "
        "power iterations), its median and the fraction of images above 1 (no stable fixed "
        "point there: the forward solve cannot converge and the exact implicit gradient has "
        "the wrong sign on that mode); and the mean relative residual of that epoch's "
        "training solves. Values are means over seeds."
    )
    section.settings = {"seeds": ", ".join(map(str, seeds)), "epochs": str(task.epochs)}
    table = Table(
        "Spectral radius of J_f and training residual by epoch (mean over seeds)",
        [
            Column("variant", "trained by"),
            Column("epoch", "epoch"),
            Column("radius", "median spectral radius", ".3f"),
            Column("above_one", "fraction above 1", ".2f"),
            Column("residual", "train residual", ".3g"),
            Column("metric", "final test accuracy %", ".1f"),
        ],
    )
    epochs = range(1, task.epochs + 1)
    shown = sorted({1, 2, 4, task.epochs // 2, task.epochs} & set(epochs))
    curves: dict[str, dict[str, tuple[list[int], list[float]]]] = {
        "radius": {},
        "above": {},
        "residual": {},
    }
    for variant, runs in traces.items():
        radius = seed_mean([r.radius_median for r in runs])
        above = seed_mean([r.above_one for r in runs])
        residual = seed_mean([r.residual for r in runs])
        for key, values in (("radius", radius), ("above", above), ("residual", residual)):
            curves[key][variant] = (list(epochs), values)
        for epoch in shown:
            table.add(
                variant=variant,
                epoch=epoch,
                radius=radius[epoch - 1],
                above_one=above[epoch - 1],
                residual=residual[epoch - 1],
                metric=100 * statistics.fmean(r.metric for r in runs)
                if epoch == task.epochs
                else None,
            )
    section.tables.append(table)
    path = line_plot(
        config.out / "parity_spectrum.png",
        [
            ("median spectral radius of J_f", "radius", curves["radius"]),
            ("fraction of images above 1", "fraction", curves["above"]),
            ("training residual", "mean relative residual", curves["residual"]),
        ],
        xlabel="epoch",
    )
    section.figures.append(
        Figure(path.name, f"The {task.name} cell's spectrum and residual during training")
    )
    return section
