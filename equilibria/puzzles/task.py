"""Reasoning puzzles as a task (`run.task=puzzles`): trained at one difficulty, tested at harder
ones by iterating longer; a saved run can be evaluated (on harder sizes, on a puzzle file, over
budgets and from several starts) and loaded for one's own puzzles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import Config, ConfigError
from ..tasks import Task
from ..training.distributed import Runtime
from .data import FAMILIES
from .evaluate_run import evaluate_run
from .model import parameter_count
from .report import finalize
from .setup import (
    PuzzleData,
    build_puzzle_model,
    explicit_model,
    family_of,
    puzzle_data,
    resolve,
    trained_puzzle_model,
    training_cap,
)
from .trainer import PuzzleTrainer


def check(config: Config, runtime: Runtime, checkpoint: dict | None) -> None:
    """One process, the solves' own starts, no weight average."""
    if runtime.distributed:
        raise ConfigError("run.task=puzzles trains in one process; launch it without torchrun")
    if config.deq.init != "zeros":
        raise ConfigError(
            f"deq.init={config.deq.init} is not available for run.task=puzzles: its solves start "
            "from random states (puzzles.start_scale); set deq.init=zeros"
        )
    if config.optim.average:
        raise ConfigError(
            f"optim.average={config.optim.average} (a moving average of the weights) is not "
            "available for run.task=puzzles; set optim.average=0"
        )


def announce(config: Config, data: PuzzleData, trainer: PuzzleTrainer, out: Path) -> str:
    network = explicit_model(config) or (
        f"a DEQ (training cap {training_cap(config)}, starts of scale "
        f"{config.puzzles.start_scale:g})"
    )
    return (
        f"{network}, {parameter_count(trainer.model):,} parameters, on {data.description}; "
        f"{trainer.runtime.device}; writing to {out}"
    )


def finish(config: Config, data: PuzzleData, trainer: PuzzleTrainer, out: Path) -> dict[str, Any]:
    state = trainer.state
    return finalize(config, data, trainer.model, out, state.history, state.progress.train_seconds)


def headline(summary: dict[str, Any]) -> str:
    """'prefix_sums: solved 100.0% of 32-bit strings (trained) -> 99.5% of 512-bit strings
    (mean NFE 1150)': the trained difficulty, then the hardest tested."""
    tests, train = summary.get("tests_at_depth") or summary["tests"], summary["train_size"]
    hardest = summary["hardest_size"]
    family = FAMILIES[summary["family"]]
    base = tests.get(str(train))
    hard = tests[str(hardest)]
    start = (
        f"{100 * base['accuracy']:.1f}% of {family.description(train)} (trained) -> "
        if base and hardest != train
        else ""
    )
    nfe = f" (mean NFE {hard['forward_nfe']:.0f})" if hard.get("forward_nfe") else ""
    if summary.get("tests_at_depth"):
        nfe = f" at its depth {hard['max_iter']}"
    return (
        f"{summary['family']}: solved {start}{100 * hard['accuracy']:.1f}% of "
        f"{family.description(hardest)}{nfe}"
    )


def run_name(config: Config) -> str:
    return f"{config.puzzles.family}-{config.puzzles.network}"


TASK = Task(
    name="puzzles",
    noun="a puzzle solver",
    section="puzzles",
    load_data=puzzle_data,
    build_model=build_puzzle_model,
    trainer=PuzzleTrainer,
    announce=announce,
    finalize=finish,
    headline=headline,
    check=check,
    explicit_model=explicit_model,
    run_name=run_name,
    resolve=resolve,
    reads_images=False,
    evaluate=evaluate_run,
    eval_options=("data_file", "sizes", "starts", "select"),
    load_model=trained_puzzle_model,
    model_data=family_of,
)
