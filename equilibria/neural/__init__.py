"""Learned DEQ solvers: an initializer and Anderson-style updates trained on a frozen model.

The solver loads with the package; its training (`fit_neural_solver`, `SolverTraining`, ...)
loads on first use, so that `import equilibria` stays free of training code.
"""

from typing import Any

from .initializer import Initializer
from .mixing import History, MixingNetwork, anderson_weights
from .solver import NeuralSolver

TRAINING_NAMES = ("SolverTraining", "TrainingLog", "fit_neural_solver", "fixed_point_targets")


def __getattr__(name: str) -> Any:
    """The training names, from `equilibria.neural.training` imported on first access."""
    if name in TRAINING_NAMES:
        from . import training

        return getattr(training, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "History",
    "Initializer",
    "MixingNetwork",
    "NeuralSolver",
    "SolverTraining",
    "TrainingLog",
    "anderson_weights",
    "fit_neural_solver",
    "fixed_point_targets",
]
