"""equilibria: deep equilibrium models in PyTorch.

The output of a DEQ is the fixed point z* = f(z*, x) of one layer, found by a solver and
differentiated implicitly, so memory does not grow with depth.

Importing the package loads the core (solvers, `solve`, `DEQ`, backward strategies, statistics,
errors, the ready-made `cells`) and the stability toolkit. The models and the application
(training, the tasks, the command line, its configuration and data) are imported by name, e.g.
`from equilibria.models import MDEQ`; `eq.models`, `eq.ssl`, ... also load on first access.
"""

from importlib import import_module
from typing import Any

from . import cells, neural, stability
from .backward import BACKWARDS, Backward, Implicit, OneStep, Phantom, Unrolled, make_backward
from .breadth import BreadthResult, solve_breadth
from .deq import DEQ, DEQStats, jacobian_loss
from .errors import (
    ConvergenceWarning,
    EquilibriaError,
    NonFiniteError,
    NotConvergedError,
    StateMismatchError,
    UnsupportedError,
)
from .fixed_point import SolveSettings
from .neural import NeuralSolver
from .reversible import ReconstructionWarning, Reversible
from .solution import Solution, Status
from .solve import solve
from .solvers import GMRES, SOLVERS, Anderson, Broyden, Newton, Picard, Solver, make_solver
from .stability import (
    CorrectionStates,
    FixedPointCache,
    FixedPointCorrection,
    JacobianPenalty,
    Pretrain,
    VariationalDropout,
    VariationalDropout1d,
    VariationalDropout2d,
    spectral_norm,
    spectral_radius,
    weight_norm,
)

__version__ = "0.1.0"

# sub-packages outside the core, loaded on first access as attributes (`eq.ssl.nt_xent`)
LAZY_PACKAGES = (
    "cli",
    "config",
    "data",
    "inr",
    "lm",
    "models",
    "monotone",
    "ssl",
    "training",
)
# names of the learned solvers' training, from `equilibria.neural`
LAZY_NEURAL = ("SolverTraining", "fit_neural_solver")
# a trained run read back (`eq.load_run(RUN)`), from `equilibria.tasks`
LAZY_TASKS = ("LoadedRun", "load_run")


def __getattr__(name: str) -> Any:
    """A sub-package outside the core, or a learned-solver training name, imported on first use."""
    if name in LAZY_PACKAGES:
        return import_module(f"{__name__}.{name}")
    if name in LAZY_NEURAL:
        return getattr(neural, name)
    if name in LAZY_TASKS:
        return getattr(import_module(f"{__name__}.tasks"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *LAZY_PACKAGES, *LAZY_NEURAL, *LAZY_TASKS])


__all__ = [
    "BACKWARDS",
    "DEQ",
    "SOLVERS",
    "Anderson",
    "Backward",
    "Broyden",
    "ConvergenceWarning",
    "DEQStats",
    "GMRES",
    "EquilibriaError",
    "Implicit",
    "Newton",
    "NonFiniteError",
    "NotConvergedError",
    "OneStep",
    "Phantom",
    "Picard",
    "ReconstructionWarning",
    "Reversible",
    "Solution",
    "SolveSettings",
    "Solver",
    "StateMismatchError",
    "Status",
    "UnsupportedError",
    "Unrolled",
    "make_backward",
    "make_solver",
    "solve",
    "solve_breadth",
    "BreadthResult",
    "cells",
    # stability and training toolkit
    "stability",
    "VariationalDropout",
    "VariationalDropout1d",
    "VariationalDropout2d",
    "spectral_norm",
    "weight_norm",
    "CorrectionStates",
    "FixedPointCache",
    "FixedPointCorrection",
    "JacobianPenalty",
    "Pretrain",
    "jacobian_loss",
    "spectral_radius",
    # learned solvers
    "NeuralSolver",
    "SolverTraining",
    "fit_neural_solver",
    # runs
    "LoadedRun",
    "load_run",
]
