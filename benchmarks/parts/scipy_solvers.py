"""The library's solvers against SciPy's on classic nonlinear equations the project did not write.

Each problem of `benchmarks.nonlinear_problems` (Moré-Garbow-Hillstrom and MINPACK-1, Kelley's
fixed-point problems, Bratu, non-contractive tanh maps) is solved from its standard start by
eq.Newton(), eq.Anderson() and eq.Broyden() on z = f(z), and by SciPy's newton_krylov, anderson
and broyden1 on G(x) = f(x) - x in NumPy float64, all at their defaults. Both are judged by one
number: a solve succeeds when ||f(x) - x||_2 <= 1e-8 max(1, ||f(x0) - x0||_2) at
the point it returns (SciPy: the best point it evaluated), within a cap of evaluations. An
evaluation is one call of f or one Jacobian-vector product (counted by wrapping f, so SciPy's
finite-difference products and line-search trials count as they do for the library, and so do
the shorter trials of the library's step safeguard). On the tanh maps, dense plain Newton
(exact Jacobian by torch.func.jacrev, full steps) is the reference; its Jacobian counts as n
evaluations.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import numpy as np
import torch

import equilibria as eq

from ..config import BenchConfig
from ..nonlinear_problems import EquationProblem, collection
from ..registry import register
from ..report import Check, Column, Section, Table
from ..timing import Clock

RELATIVE_TOLERANCE = 1e-8
OURS: dict[str, Callable[[], eq.Solver]] = {
    "eq.Newton": eq.Newton,
    "eq.Anderson": eq.Anderson,
    "eq.Broyden": eq.Broyden,
}
THEIRS = ("newton_krylov", "anderson", "broyden1")  # scipy.optimize's, in the same order
DENSE_NEWTON = "dense Newton"
LABELS = (*OURS, *(f"scipy {name}" for name in THEIRS), DENSE_NEWTON)


@dataclass(frozen=True)
class Settings:
    """cap: the most evaluations a solve may use; repeats: timed solves per row (the median is
    reported; the counts are the first solve's); quick: the small problem subset."""

    cap: int = 2000
    repeats: int = 3
    quick: bool = False

    @classmethod
    def for_config(cls, config: BenchConfig) -> Settings:
        return cls(cap=300, repeats=1, quick=True) if config.quick else cls()


@dataclass(frozen=True)
class Outcome:
    """One solve: whether it met the tolerance, what it spent, where it ended and why."""

    solved: bool
    evaluations: int
    residual: float  # ||f(x) - x||_2 at the point judged
    seconds: float
    stopped: str


def tolerance(problem: EquationProblem) -> float:
    """The absolute target 1e-8 max(1, ||f(x0) - x0||_2) every solver of `problem` must meet."""
    with torch.no_grad():
        initial = float(problem.residual(problem.x0()).norm())
    return RELATIVE_TOLERANCE * max(1.0, initial)


def residual_norm(problem: EquationProblem, z: torch.Tensor) -> float:
    """||f(z) - z||_2 for a single point, uncounted; inf where it is not finite."""
    with torch.no_grad():
        norm = float(problem.residual(z.reshape(1, -1)).norm())
    return norm if math.isfinite(norm) else math.inf


class CountingMap:
    """f with a call counter (a forward-mode Jacobian-vector product is one call on duals)."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.fn = fn
        self.calls = 0

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.fn(z)


def solve_ours(
    problem: EquationProblem, solver: eq.Solver, target: float, cap: int, clock: Clock
) -> Outcome:
    """eq.solve on z = f(z) to ||f(z) - z|| <= target with at most `cap` evaluations."""
    counted = CountingMap(problem.fixed_point_map)
    z, stopped = None, ""
    start = clock()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            solution = eq.solve(
                counted, problem.x0(), solver, tol=target, max_iter=cap, stop_mode="abs",
                patience=None, on_failure="ignore",
            )  # fmt: skip
        z, stopped = solution.z, str(solution.status)
    except (ArithmeticError, RuntimeError, ValueError) as error:  # NonFiniteError included
        stopped = type(error).__name__
    seconds = clock() - start
    residual = math.inf if z is None else residual_norm(problem, z)
    return Outcome(residual <= target, counted.calls, residual, seconds, stopped)


class BudgetExhausted(Exception):
    """SciPy asked for one evaluation more than the cap allows."""


class CountingResidual:
    """G(x) = f(x) - x on NumPy vectors for SciPy: counts calls, stops at the cap, and keeps
    the best point evaluated and the call count at which the target was first met."""

    def __init__(self, problem: EquationProblem, target: float, cap: int) -> None:
        self.problem = problem
        self.target = target
        self.cap = cap
        self.calls = 0
        self.best = math.inf
        self.met_at: int | None = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.calls >= self.cap:
            raise BudgetExhausted
        self.calls += 1
        z = torch.from_numpy(np.array(x, dtype=np.float64)).reshape(1, -1)
        with torch.no_grad():
            g = (self.problem.fixed_point_map(z) - z).reshape(-1).numpy()
        norm = float(np.linalg.norm(g))
        if math.isfinite(norm) and norm < self.best:
            self.best = norm
            if norm <= self.target and self.met_at is None:
                self.met_at = self.calls
        return g


def solve_theirs(
    problem: EquationProblem, name: str, target: float, cap: int, clock: Clock
) -> Outcome:
    """scipy.optimize.`name` on G(x) = f(x) - x from the same start, stopping at the same
    2-norm target; the cap counts evaluations (SciPy's maxiter counts iterations)."""
    import scipy.optimize
    from threadpoolctl import threadpool_limits

    counted = CountingResidual(problem, target, cap)
    method = getattr(scipy.optimize, name)
    stopped = "converged"
    start = clock()
    try:
        with threadpool_limits(1), np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            method(
                counted, problem.start.numpy().copy(), f_tol=target, maxiter=cap,
                tol_norm=np.linalg.norm,
            )  # fmt: skip
    except BudgetExhausted:
        stopped = "cap"
    except scipy.optimize.NoConvergence:
        stopped = "maxiter"
    except (ArithmeticError, ValueError, np.linalg.LinAlgError) as error:
        stopped = type(error).__name__
    seconds = clock() - start
    solved = counted.met_at is not None
    spent = counted.met_at if solved else counted.calls
    return Outcome(solved, spent, counted.best, seconds, stopped)


def solve_dense_newton(problem: EquationProblem, target: float, cap: int, clock: Clock) -> Outcome:
    """Plain Newton x <- x - J(x)^-1 F(x), F(x) = x - f(x), with the exact Jacobian from
    torch.func.jacrev (counted as n evaluations) and no line search."""
    n = problem.size

    def residual(x: torch.Tensor) -> torch.Tensor:
        return problem.residual(x.unsqueeze(0)).squeeze(0)

    start = clock()
    x = problem.start.clone()
    value, evaluations, stopped = residual(x), 1, "cap"
    best = float(value.norm())
    while best > target:
        if evaluations + n + 1 > cap:
            break
        jacobian = torch.func.jacrev(residual)(x)
        evaluations += n
        try:
            x = x - torch.linalg.solve(jacobian, value)
        except RuntimeError:  # a singular Jacobian
            stopped = "singular"
            break
        value = residual(x)
        evaluations += 1
        norm = float(value.norm())
        if not math.isfinite(norm):
            stopped = "non-finite"
            break
        best = min(best, norm)
    seconds = clock() - start
    if best <= target:
        stopped = "converged"
    return Outcome(best <= target, evaluations, best, seconds, stopped)


def warm_up(clock: Clock) -> None:
    """One untimed solve by every solver on a small problem, so that no timed solve pays for
    first-call setup (forward-mode AD, SciPy's imports)."""
    problem = collection(quick=True)[-1]
    run_problem(problem, Settings(cap=50, repeats=1), clock)


def repeated(solve: Callable[[], Outcome], repeats: int) -> Outcome:
    """The first solve's outcome with the median time of `repeats` solves (all deterministic)."""
    outcomes = [solve() for _ in range(repeats)]
    return replace(outcomes[0], seconds=statistics.median(o.seconds for o in outcomes))


def run_problem(problem: EquationProblem, s: Settings, clock: Clock) -> dict[str, Outcome]:
    """Every solver on one problem, by label."""
    target = tolerance(problem)
    solves: dict[str, Callable[[], Outcome]] = {
        label: partial(solve_ours, problem, make(), target, s.cap, clock)
        for label, make in OURS.items()
    }
    for name in THEIRS:
        solves[f"scipy {name}"] = partial(solve_theirs, problem, name, target, s.cap, clock)
    if problem.source == "tanh map":
        solves[DENSE_NEWTON] = partial(solve_dense_newton, problem, target, s.cap, clock)
    return {label: repeated(solve, s.repeats) for label, solve in solves.items()}


def evaluations_cell(outcome: Outcome | None) -> Any:
    """The evaluations a solved run spent; an unsolved one says so with what it spent."""
    if outcome is None:
        return None
    return outcome.evaluations if outcome.solved else f"not solved ({outcome.evaluations})"


def coverage_check(
    results: dict[str, dict[str, Outcome]],
    ours: str,
    theirs: str,
    *,
    problems: list[str] | None = None,
    scope: str = "problem",
    at_most_their_evaluations: bool = False,
) -> Check:
    """`ours` solves every problem (of `problems`, default all; `scope` names them) that
    `theirs` solves, and with `at_most_their_evaluations` spends no more evaluations on each."""
    names = [name for name in (problems or results) if theirs in results[name]]
    reference = [name for name in names if results[name][theirs].solved]
    cost = " with at most its evaluations on each" if at_most_their_evaluations else ""
    target = f"{ours} solves every {scope} {theirs} solves{cost}"
    if not reference:
        return Check(target, f"{theirs} solved none of {len(names)} {scope}s", None)
    missed = [name for name in reference if not results[name][ours].solved]
    costlier = [
        f"{name} ({results[name][ours].evaluations} vs {results[name][theirs].evaluations})"
        for name in reference
        if at_most_their_evaluations
        and results[name][ours].solved
        and results[name][ours].evaluations > results[name][theirs].evaluations
    ]
    solved = len(reference) - len(missed)
    measured = f"{solved} of the {len(reference)} {scope}s {theirs} solves"
    if missed:
        measured += ". Not solved: " + "; ".join(missed)
    if costlier:
        measured += ". More evaluations: " + "; ".join(costlier)
    return Check(target, measured, not missed and not costlier)


def tables(
    problems: list[EquationProblem], results: dict[str, dict[str, Outcome]], cap: int
) -> tuple[Table, Table, Table]:
    """The problem list, the evaluations table (one row per problem) and every solve."""
    listing = Table(
        "Problems",
        [
            Column("problem", "problem"),
            Column("source", "source"),
            Column("n", "n"),
            Column("start", "x0"),
            Column("initial", "||F(x0)||", ".3g"),
            Column("target", "target ||F||", ".2g"),
        ],
    )
    summary = Table(
        f"Evaluations to the target (cap {cap}; unsolved: the evaluations spent)",
        [Column("problem", "problem"), Column("n", "n")]
        + [Column(label, label) for label in LABELS],
    )
    every = Table(
        "Every solve",
        [
            Column("problem", "problem"),
            Column("solver", "solver"),
            Column("solved", "solved"),
            Column("evaluations", "evaluations"),
            Column("residual", "final ||F||", ".2e"),
            Column("ms", "ms", ".1f"),
            Column("stopped", "stopped"),
        ],
    )
    for problem in problems:
        outcomes = results[problem.name]
        target = tolerance(problem)
        listing.add(
            problem=problem.name, source=problem.source, n=problem.size,
            start=problem.start_text, initial=residual_norm(problem, problem.x0()),
            target=target,
        )  # fmt: skip
        summary.add(
            problem=problem.name,
            n=problem.size,
            **{label: evaluations_cell(outcomes.get(label)) for label in LABELS},
        )
        for label, outcome in outcomes.items():
            every.add(
                problem=problem.name, solver=label, solved=outcome.solved,
                evaluations=outcome.evaluations, residual=outcome.residual,
                ms=1000 * outcome.seconds, stopped=outcome.stopped,
            )  # fmt: skip
    summary.add(problem="problems solved", n="", **solved_counts(results))
    return listing, summary, every


def solved_counts(results: dict[str, dict[str, Outcome]]) -> dict[str, int]:
    """Per solver label, how many of the problems it ran on it solved."""
    return {
        label: sum(outcomes[label].solved for outcomes in results.values() if label in outcomes)
        for label in LABELS
    }


def checks(problems: list[EquationProblem], results: dict[str, dict[str, Outcome]]) -> list[Check]:
    tanh_maps = [p.name for p in problems if p.source == "tanh map"]
    return [
        coverage_check(results, "eq.Newton", "scipy newton_krylov", at_most_their_evaluations=True),
        coverage_check(results, "eq.Newton", DENSE_NEWTON, problems=tanh_maps, scope="tanh map"),
        coverage_check(results, "eq.Anderson", "scipy anderson"),
        coverage_check(results, "eq.Broyden", "scipy broyden1"),
    ]


@register(
    "scipy",
    "Solvers against SciPy on classic nonlinear equations",
    order=55,
    requires=("scipy", "threadpoolctl"),
)
def run(config: BenchConfig) -> Section:
    s = Settings.for_config(config)
    torch.manual_seed(config.seed)
    problems = collection(quick=s.quick)
    warm_up(config.clock)
    results = {problem.name: run_problem(problem, s, config.clock) for problem in problems}
    section = Section("scipy", "Solvers against SciPy on classic nonlinear equations")
    section.summary = __doc__.split("\n\n", 1)[1].replace("\n", " ").strip()
    import scipy

    section.settings = {
        "target": f"||f(x) - x||_2 <= {RELATIVE_TOLERANCE:g} max(1, ||f(x0) - x0||_2)",
        "cap": f"{s.cap} evaluations",
        "solvers": "defaults of both libraries (eq.Newton(), eq.Anderson(), eq.Broyden(); "
        f"SciPy {scipy.__version__}: newton_krylov, anderson, broyden1 with f_tol = the "
        "target in the 2-norm)",
        "threads": f"{config.threads} (torch), 1 (NumPy's BLAS)",
        "timing": f"median of {s.repeats} solves after a warm-up, {config.clock_name} clock",
    }
    section.tables += list(tables(problems, results, s.cap))
    section.checks += checks(problems, results)
    section.notes += [
        "Each problem's start is its source's; the tanh maps' x is drawn once per seed, "
        "f(z) = tanh(W z + x) with W Gaussian scaled to the spectral radius rho.",
        "stopped: the library's status (converged, max_iter at the cap, diverged when the "
        "residual grew 1e4-fold over the initial one, its default guard); for SciPy, converged, "
        "cap, or the exception SciPy raised (the SciPy rows' final ||F|| is then the best "
        "it evaluated).",
        "SciPy works on G(x) = f(x) - x, the residual the library drives to zero: its "
        "quasi-Newton methods start from the Jacobian guess -I/alpha (alpha from the first "
        "step), the library's Anderson and Broyden from -I, so both start from the same sign; "
        "where a step of the library's Anderson (any step) or Broyden (the first) takes the "
        "residual past 30 (Anderson) or 3 (Broyden) times the least one seen, its safeguard "
        "shortens the step and scales that guess by the fraction taken; Broyden's first step "
        "that leaves over 99% of the residual rescales its guess to -t I (t from the first "
        "secant pair, within [0.5, 1]) before the first update.",
        "eq.Newton: GMRES on recycled corrections to the Eisenstat-Walker forcing term, a "
        "line search on ||F||^2 that never falls back to the plain iteration, and a full "
        "Newton step for a sample whose line search failed twice in a row (a dip in ||F|| "
        "that is no root), as SciPy's newton_krylov does whenever its line search fails.",
    ]
    return section
