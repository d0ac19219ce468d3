"""Learned DEQ solvers: an initializer and Anderson-style updates trained on a frozen model."""

from .initializer import Initializer
from .mixing import History, MixingNetwork, anderson_weights
from .solver import NeuralSolver
from .training import SolverTraining, TrainingLog, fit_neural_solver, fixed_point_targets

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
