"""The solver lists the parts compare, derived from `eq.SOLVERS`: a new solver joins every list
whose description fits it, with no benchmark edited."""

from __future__ import annotations

import equilibria as eq

from .peer import SOLVER_NAMES


def nonlinear_solvers() -> list[str]:
    """The registered solvers for any nonlinear map (GMRES assumes an affine one, the splitting
    solvers a monotone cell)."""
    return [
        name for name, cls in eq.SOLVERS.items() if not (cls.affine_only or cls.needs_splitting)
    ]


def classical_solvers() -> tuple[str, ...]:
    """The nonlinear solvers that TorchDEQ ships too (the DEQ literature's baselines: fixed-point
    iteration, Anderson, Broyden), in `eq.SOLVERS` order."""
    return tuple(name for name in nonlinear_solvers() if name in SOLVER_NAMES)
