"""equilibria: deep equilibrium models in PyTorch.

The output of a DEQ is the fixed point z* = f(z*, x) of one layer, found by a solver and
differentiated implicitly, so memory does not grow with depth.
"""

from . import ssl, stability
from .backward import BACKWARDS, Backward, Implicit, OneStep, Phantom, Unrolled, make_backward
from .deq import DEQ, DEQStats
from .errors import (
    ConvergenceWarning,
    EquilibriaError,
    NonFiniteError,
    NotConvergedError,
    StateMismatchError,
    UnsupportedError,
)
from .fixed_point import SolveSettings
from .neural import NeuralSolver, SolverTraining, fit_neural_solver
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
    jacobian_loss,
    spectral_norm,
    spectral_radius,
    weight_norm,
)

__version__ = "0.1.0"

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
    # contrastive pre-training (eq.ssl.nt_xent, eq.ssl.DEQBackbone, ...)
    "ssl",
]
