"""What evaluating any saved run shares: checking the solve settings asked for against the model,
and the learned solver that `equilibria train-solver` saves beside a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..neural import NeuralSolver

SOLVER_FILENAME = "neural_solver.pt"


def check_solve_options(
    path: Path, explicit: str | None, solve: dict[str, Any], sweep: list[int] | None
) -> None:
    """Refuse solver settings for a model without a solver (`explicit` describes it; None for an
    equilibrium model), and an iteration cap together with a sweep of caps."""
    if explicit and (solve or sweep):
        raise ConfigError(
            f"{path} holds {explicit}, which runs no solver; --solver, "
            "--tol, --max-iter and --sweep apply to equilibrium models only"
        )
    if sweep and solve.get("max_iter"):
        raise ConfigError("--sweep sets the iteration caps itself; drop --max-iter")


def neural_solver(path: Path) -> NeuralSolver:
    """The learned solver saved beside the checkpoint at `path` by `equilibria train-solver`."""
    solver_path = path.parent / SOLVER_FILENAME
    if not solver_path.is_file():
        raise ConfigError(
            f"--solver neural needs a trained solver at {solver_path}; make one with: "
            f"equilibria train-solver {path}"
        )
    return NeuralSolver.load(solver_path)


def with_solver(solve: dict[str, Any], path: Path, device: Any) -> dict[str, Any]:
    """`solve` with the solver "neural" replaced by the learned solver saved beside `path`."""
    if solve.get("solver") != "neural":
        return dict(solve)
    return {**solve, "solver": neural_solver(path).to(device)}
