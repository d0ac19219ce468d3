"""Anderson and Broyden on classic equations whose first plain step overshoots (the
Moré-Garbow-Hillstrom problems SciPy's anderson and broyden1 solve from their standard starts),
and the safeguard that makes them solve those while leaving contractive maps alone."""

import pytest
import torch

import equilibria as eq
from benchmarks.nonlinear_problems import (
    EquationProblem,
    brown_almost_linear,
    broyden_banded,
    broyden_tridiagonal,
    extended_powell_singular,
    extended_rosenbrock,
    variably_dimensioned,
)

CAP = 2000
PROBLEMS = {
    "Broyden tridiagonal": lambda: broyden_tridiagonal(500),
    "Broyden banded": lambda: broyden_banded(500),
    "variably dimensioned": lambda: variably_dimensioned(50),
    "Brown almost-linear": lambda: brown_almost_linear(50),
}


def solve(problem: EquationProblem, solver: eq.Solver) -> tuple[eq.Solution, float]:
    """The benchmark's solve: ||f(z) - z|| <= 1e-8 max(1, ||f(z0) - z0||), CAP evaluations."""
    with torch.no_grad():
        target = 1e-8 * max(1.0, float(problem.residual(problem.x0()).norm()))
        solution = eq.solve(
            problem.fixed_point_map, problem.x0(), solver, tol=target, max_iter=CAP,
            stop_mode="abs", patience=None, on_failure="ignore",
        )  # fmt: skip
    return solution, target


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_anderson_solves_the_problems_its_plain_steps_overshoot(name):
    solution, target = solve(PROBLEMS[name](), eq.Anderson())
    assert solution.status == eq.Status.CONVERGED, solution.message
    assert float(solution.abs_residual) <= target and solution.nfe <= 200


@pytest.mark.parametrize("problem", [extended_rosenbrock, extended_powell_singular])
def test_anderson_keeps_a_path_whose_residual_climbs_before_it_converges(problem):
    """The safeguard bounds growth loosely: Anderson's residual climbs over 10-fold on the
    extended Rosenbrock function on the way to its root, in 10 evaluations."""
    solution, target = solve(problem(), eq.Anderson())
    assert solution.status == eq.Status.CONVERGED and solution.nfe <= 40


@pytest.mark.parametrize("name", ["Broyden banded", "variably dimensioned", "Brown almost-linear"])
def test_broyden_scales_its_first_step_where_it_overshoots(name):
    solution, target = solve(PROBLEMS[name](), eq.Broyden())
    assert solution.status == eq.Status.CONVERGED, solution.message
    assert float(solution.abs_residual) <= target and solution.nfe <= 100


def test_broyden_scales_its_guess_after_a_first_step_that_leaves_the_residual():
    """Broyden tridiagonal's first plain step leaves 99.9% of the residual (it reflects it):
    with the guess -I the later steps run away; with the first secant pair's scale (0.5) the
    solve converges, as SciPy's broyden1 does in 89 evaluations."""
    problem = PROBLEMS["Broyden tridiagonal"]()
    solution, target = solve(problem, eq.Broyden())
    assert solution.status == eq.Status.CONVERGED, solution.message
    assert float(solution.abs_residual) <= target and solution.nfe <= 89
    unscaled, _ = solve(problem, eq.Broyden(secant_scale=False))
    assert unscaled.status == eq.Status.DIVERGED


def test_broyden_keeps_its_guess_after_a_first_step_that_shrinks_the_residual():
    """A contractive map's first step removes most of the residual: the secant scaling leaves
    the solve unchanged."""
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(16, 16, generator=gen, dtype=torch.float64) * 0.2
    x = torch.randn(8, 16, generator=gen, dtype=torch.float64)

    def f(z):
        return torch.tanh(z @ w.T + x)

    options = dict(tol=1e-10, max_iter=60, on_failure="ignore")
    on = eq.solve(f, torch.zeros_like(x), eq.Broyden(), **options)
    off = eq.solve(f, torch.zeros_like(x), eq.Broyden(secant_scale=False), **options)
    torch.testing.assert_close(on.abs_trace, off.abs_trace, rtol=0, atol=0)


@pytest.mark.parametrize("name", list(PROBLEMS))
def test_broyden_with_its_line_search_solves_every_problem(name):
    solution, target = solve(PROBLEMS[name](), eq.Broyden(line_search=True))
    assert solution.status == eq.Status.CONVERGED, solution.message
    assert float(solution.abs_residual) <= target


@pytest.mark.parametrize("name", ["variably dimensioned", "Brown almost-linear"])
@pytest.mark.parametrize("solver", [eq.Anderson(max_growth=None), eq.Broyden(max_growth=None)])
def test_without_the_safeguard_the_first_step_diverges(name, solver):
    solution, _ = solve(PROBLEMS[name](), solver)
    assert solution.status == eq.Status.DIVERGED and solution.nfe == 2


@pytest.mark.parametrize("solver", ["anderson", "broyden"])
def test_the_safeguard_leaves_a_contractive_solve_unchanged(solver):
    """On a contraction no step grows the residual that much: the same iterates, the same
    evaluations, as with the safeguard off."""
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(16, 16, generator=gen, dtype=torch.float64) * 0.2
    x = torch.randn(8, 16, generator=gen, dtype=torch.float64)

    def f(z):
        return torch.tanh(z @ w.T + x)

    options = dict(tol=1e-10, max_iter=60, on_failure="ignore")
    cls = {"anderson": eq.Anderson, "broyden": eq.Broyden}[solver]
    on = eq.solve(f, torch.zeros_like(x), cls(), **options)
    off = eq.solve(f, torch.zeros_like(x), cls(max_growth=None), **options)
    assert on.nfe == off.nfe
    torch.testing.assert_close(on.abs_trace, off.abs_trace, rtol=0, atol=0)


@pytest.mark.parametrize("cls", [eq.Anderson, eq.Broyden])
@pytest.mark.parametrize("value", [1.0, 0.5, float("inf")])
def test_max_growth_must_exceed_one(cls, value):
    with pytest.raises(ValueError, match="max_growth must be None or a finite number > 1"):
        cls(max_growth=value)
