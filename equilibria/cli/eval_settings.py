"""The solve settings `equilibria eval` is asked for, for a classifier or a language model alike:
read from the command line, checked against the model, described, and recorded in eval.json."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..config import ConfigError
from ..neural import NeuralSolver
from ..training.metrics import write_json


def solve_options(args: argparse.Namespace) -> dict[str, Any]:
    """--solver, --tol and --max-iter as DEQ solve settings (those given only)."""
    solving = {"solver": args.solver, "tol": args.tol, "max_iter": args.max_iter}
    return {k: v for k, v in solving.items() if v is not None}


def check_solve_options(
    path: Path, explicit: str | None, solving: dict[str, Any], args: argparse.Namespace
) -> None:
    """Refuse solver options for a model without a solver (`explicit` describes it; None for an
    equilibrium model), and --max-iter together with --sweep."""
    if explicit and (solving or args.sweep):
        raise ConfigError(
            f"{path} holds {explicit}, which runs no solver; --solver, "
            "--tol, --max-iter and --sweep apply to equilibrium models only"
        )
    if args.sweep and args.max_iter:
        raise ConfigError("--sweep sets the iteration caps itself; drop --max-iter")


def neural_solver(path: Path) -> NeuralSolver:
    """The learned solver saved beside the checkpoint by `equilibria train-solver`."""
    solver_path = path.parent / "neural_solver.pt"
    if not solver_path.is_file():
        raise ConfigError(
            f"--solver neural needs a trained solver at {solver_path}; make one with: "
            f"equilibria train-solver {path}"
        )
    return NeuralSolver.load(solver_path)


def describe(solving: dict[str, Any]) -> str:
    """The settings as the header of the printed results says them."""
    return (
        ", ".join(f"{k}={getattr(v, 'name', v)}" for k, v in solving.items())
        or "the config's eval settings"
    )


def write_eval(
    out: Path, path: Path, solving: dict[str, Any], rows: list[dict[str, Any]], **extra: Any
) -> None:
    """eval.json in `out`: the checkpoint, the settings (a solver by name), `extra`, the rows."""
    out.mkdir(parents=True, exist_ok=True)
    named = {k: getattr(v, "name", v) for k, v in solving.items()}
    write_json(out / "eval.json", {"checkpoint": str(path), **named, **extra, "results": rows})
