"""Fixed-point solvers, one file each, behind the `Solver` protocol and one shared loop."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from ..errors import check_choice, reject_unknown_options
from .anderson import Anderson
from .base import EvaluationBudget, Solver, Step
from .broyden import Broyden
from .forward_backward import ForwardBackward
from .gmres import GMRES
from .newton import Newton
from .peaceman_rachford import PeacemanRachford
from .picard import Picard

SOLVERS: dict[str, type[Solver]] = {
    cls.name: cls
    for cls in (Picard, Anderson, Broyden, Newton, GMRES, ForwardBackward, PeacemanRachford)
}


def solver_options(cls: type[Solver]) -> list[str]:
    """Names of the hyperparameters a solver class accepts."""
    return [f.name for f in dataclasses.fields(cls) if f.init]


def make_solver(
    spec: str | Solver,
    options: dict[str, Any] | None = None,
    *,
    owner: str = "solver",
    other_keywords: Iterable[str] = (),
) -> Solver:
    """A solver object from a name (plus hyperparameters) or an existing solver object.

    Unknown names and unknown hyperparameters raise errors that list the valid ones;
    `other_keywords` are the caller's own keywords, listed alongside in that message.
    """
    options = dict(options or {})
    if isinstance(spec, Solver):
        if options:
            _reject_options_beside_an_object(spec, options, owner, other_keywords)
        return spec
    if not isinstance(spec, str):
        raise TypeError(
            f"solver must be a name ({', '.join(SOLVERS)}) or a Solver object such as "
            f"eq.Anderson(m=6), got {type(spec).__name__}"
        )
    cls = SOLVERS[check_choice("solver", spec, SOLVERS)]
    reject_unknown_options(
        f"{owner} with solver {spec!r}", options, [*other_keywords, *solver_options(cls)]
    )
    return cls(**options)


def _reject_options_beside_an_object(
    spec: Solver, options: dict[str, Any], owner: str, other_keywords: Iterable[str]
) -> None:
    """A TypeError for keywords given beside a solver object: hyperparameters of that solver
    belong in the object or beside its name; anything else is an unknown keyword."""
    known = solver_options(type(spec))
    hyper = [key for key in options if key in known]
    if not hyper:
        reject_unknown_options(owner, options, other_keywords)
    given = ", ".join(f"{key}={options[key]!r}" for key in hyper)
    names = ", ".join(map(repr, hyper))
    raise TypeError(
        f"{owner} got solver option{'s' if len(hyper) > 1 else ''} {names} beside the solver "
        f"object {spec!r}; give options either in the object "
        f'(eq.{type(spec).__name__}({given})) or with a solver name (solver="{spec.name}", {given})'
    )


__all__ = [
    "SOLVERS",
    "Anderson",
    "Broyden",
    "EvaluationBudget",
    "ForwardBackward",
    "GMRES",
    "Newton",
    "PeacemanRachford",
    "Picard",
    "Solver",
    "Step",
    "make_solver",
    "solver_options",
]
