"""The benchmark's nonlinear test problems: each definition against a root, a published value,
an independent transcription of its formula, or a property its solution must have."""

import math

import pytest
import torch

from benchmarks import nonlinear_problems as np_

DTYPE = torch.float64


def small_problems():
    return [
        np_.discrete_boundary_value(10),
        np_.discrete_integral_equation(10),
        np_.broyden_tridiagonal(10),
        np_.broyden_banded(10),
        np_.trigonometric(10),
        np_.extended_rosenbrock(10),
        np_.extended_powell_singular(12),
        np_.variably_dimensioned(10),
        np_.brown_almost_linear(10),
        np_.chandrasekhar(0.9, 10),
        np_.convection_diffusion(4),
        np_.bratu(1.0, 10),
        np_.tanh_map(0, 1.3, d=10),
    ]


def newton_root(problem, steps=50):
    """Plain dense Newton on the source's F to ||F|| <= 1e-11 max(1, ||F(x0)||)."""
    x = problem.start.clone()

    def equation(v):
        return problem.equation(v.unsqueeze(0)).squeeze(0)

    tol = 1e-11 * max(1.0, float(equation(x).norm()))
    for _ in range(steps):
        value = equation(x)
        if value.norm() <= tol:
            return x
        x = x - torch.linalg.solve(torch.func.jacrev(equation)(x), value)
    raise AssertionError(f"{problem.name}: Newton left ||F|| = {float(equation(x).norm()):.2e}")


def central_difference_jacobian(fn, x, h=1e-6):
    columns = []
    for j in range(x.numel()):
        step = torch.zeros_like(x)
        step[j] = h
        columns.append((fn(x + step) - fn(x - step)) / (2 * h))
    return torch.stack(columns, dim=1)


@pytest.mark.parametrize("problem", small_problems(), ids=lambda p: p.name)
def test_the_map_and_equation_are_batched_float64_and_their_jacobian_matches_differences(problem):
    x0 = problem.x0()
    assert x0.dtype == DTYPE and x0.shape == (1, problem.size)
    batch = torch.cat([x0, x0 + 0.01], dim=0)
    assert problem.fixed_point_map(batch).shape == batch.shape
    torch.testing.assert_close(problem.equation(batch)[1:], problem.equation(batch[1:]))

    def fixed_point_map(v):
        return problem.fixed_point_map(v.unsqueeze(0)).squeeze(0)

    point = problem.start + 0.01 * torch.linspace(-1, 1, problem.size, dtype=DTYPE)
    exact = torch.func.jacrev(fixed_point_map)(point)
    difference = central_difference_jacobian(fixed_point_map, point)
    torch.testing.assert_close(exact, difference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("problem", small_problems(), ids=lambda p: p.name)
def test_fixed_points_are_the_roots(problem):
    if problem.source == "MGH":  # f(z) = z - F(z), unscaled
        z = problem.x0() + 0.1
        torch.testing.assert_close(problem.residual(z), problem.equation(z))
        return
    root = newton_root(problem).unsqueeze(0)  # a root of F is a fixed point of f
    assert float(problem.residual(root).norm()) < 1e-9


@pytest.mark.parametrize(
    ("problem", "root"),
    [
        (np_.trigonometric(20), 0.0),
        (np_.extended_rosenbrock(20), 1.0),
        (np_.extended_powell_singular(20), 0.0),
        (np_.variably_dimensioned(20), 1.0),
        (np_.brown_almost_linear(20), 1.0),
    ],
    ids=lambda p: getattr(p, "name", ""),
)
def test_published_roots_are_roots(problem, root):
    x = torch.full((1, problem.size), root, dtype=DTYPE)
    assert float(problem.equation(x).abs().max()) == 0.0


def test_published_values_at_the_start():
    rosenbrock = np_.extended_rosenbrock(4)
    expected = torch.tensor([[-4.4, 2.2, -4.4, 2.2]], dtype=DTYPE)
    torch.testing.assert_close(rosenbrock.equation(rosenbrock.x0()), expected)
    powell = np_.extended_powell_singular(4)
    expected = torch.tensor([[-7.0, -(5**0.5), 1.0, 4 * 10**0.5]], dtype=DTYPE)
    torch.testing.assert_close(powell.equation(powell.x0()), expected)


def minpack_loops(name, x):
    """The MINPACK-1 test functions written out element by element (1-based, as published)."""
    n = len(x)
    h = 1 / (n + 1)
    X = [0.0, *x, 0.0]  # X[0] and X[n + 1] are the boundary zeros
    out = []
    for k in range(1, n + 1):
        t = k * h
        if name == "discrete boundary value":
            out.append(2 * X[k] - X[k - 1] - X[k + 1] + h**2 * (X[k] + t + 1) ** 3 / 2)
        elif name == "discrete integral equation":
            s1 = sum(j * h * (X[j] + j * h + 1) ** 3 for j in range(1, k + 1))
            s2 = sum((1 - j * h) * (X[j] + j * h + 1) ** 3 for j in range(k + 1, n + 1))
            out.append(X[k] + h * ((1 - t) * s1 + t * s2) / 2)
        elif name == "Broyden tridiagonal":
            out.append((3 - 2 * X[k]) * X[k] - X[k - 1] - 2 * X[k + 1] + 1)
        elif name == "Broyden banded":
            band = sum(X[j] * (1 + X[j]) for j in range(max(1, k - 5), min(n, k + 1) + 1) if j != k)
            out.append(X[k] * (2 + 5 * X[k] ** 2) + 1 - band)
    return torch.tensor([out], dtype=DTYPE)


@pytest.mark.parametrize(
    "make",
    [
        np_.discrete_boundary_value,
        np_.discrete_integral_equation,
        np_.broyden_tridiagonal,
        np_.broyden_banded,
    ],
)
def test_vectorized_definitions_match_the_published_formulas(make):
    problem = make(13)
    x = torch.randn(1, 13, generator=torch.Generator().manual_seed(0), dtype=DTYPE)
    torch.testing.assert_close(problem.equation(x), minpack_loops(problem.name, x[0].tolist()))


@pytest.mark.parametrize(("make", "lower", "upper"), [
    (np_.broyden_tridiagonal, 1, 1), (np_.broyden_banded, 5, 1),
])  # fmt: skip
def test_banded_jacobians_have_their_published_bandwidths(make, lower, upper):
    problem = make(20)
    jacobian = torch.func.jacrev(lambda v: problem.equation(v.unsqueeze(0)).squeeze(0))(
        problem.start + 0.3
    )
    rows, columns = torch.nonzero(jacobian, as_tuple=True)
    assert int((rows - columns).max()) == lower and int((columns - rows).max()) == upper


def test_boundary_value_and_integral_equation_have_the_same_root():
    """MGH 29 is MGH 28 multiplied by the inverse of the second-difference matrix (the discrete
    Green's function h t_min (1 - t_max) of u'' = (u + t + 1)^3 / 2), so their roots agree."""
    boundary_value = newton_root(np_.discrete_boundary_value(30))
    integral_equation = newton_root(np_.discrete_integral_equation(30))
    torch.testing.assert_close(boundary_value, integral_equation, rtol=0, atol=1e-12)


@pytest.mark.parametrize("c", [0.5, 0.9, 0.9999])
def test_the_h_equation_solution_has_its_known_zeroth_moment_and_shape(c):
    """Summing h_i (1 - c/(2n) sum_j mu_i h_j / (mu_i + mu_j)) = 1 over i and symmetrizing gives
    the mean m = (2/c)(1 - sqrt(1 - c)) exactly, as for the continuous H-function."""
    problem = np_.chandrasekhar(c, 100)
    h = newton_root(problem)
    assert float(h.mean()) == pytest.approx(2 / c * (1 - math.sqrt(1 - c)), rel=1e-12)
    assert bool((h > 1).all()) and bool((h.diff() > 0).all())


def test_the_convection_diffusion_preconditioner_inverts_the_laplacian():
    """With C = 0 the equation is the Poisson problem, and f(u) is its solution for any u."""
    problem = np_.convection_diffusion(6, convection=0.0)
    u = torch.randn(2, 36, generator=torch.Generator().manual_seed(1), dtype=DTYPE)
    assert float(problem.equation(problem.fixed_point_map(u)).abs().max()) < 1e-10


def test_convection_diffusion_converges_to_the_manufactured_solution():
    errors = []
    for m in (7, 15):
        u = newton_root(np_.convection_diffusion(m))
        _, t = np_.interior_grid(m)
        grid_x, grid_y = torch.meshgrid(t, t, indexing="ij")
        exact = np_.convection_exact(grid_x, grid_y).reshape(-1)
        errors.append(float((u - exact).abs().max()))
    assert errors[1] < 0.05 and errors[1] < errors[0] / 3  # second order in h


@pytest.mark.parametrize("lam", [1.0, 3.5])
def test_bratu_solves_to_the_analytic_lower_branch(lam):
    problem = np_.bratu(lam, 100)
    u = newton_root(problem)
    _, t = np_.interior_grid(100)
    assert float((u - np_.bratu_exact(t, lam)).abs().max()) < 1e-3


def test_tanh_maps_have_the_asked_spectral_radius():
    problem = np_.tanh_map(3, 1.4, d=32)
    z = torch.zeros(1, 32, dtype=DTYPE)
    jacobian = torch.func.jacrev(lambda v: problem.fixed_point_map(v.unsqueeze(0)).squeeze(0))
    at_zero = jacobian(z[0])  # diag(1 - tanh(x)^2) W: nearly W for small x
    weights = at_zero / (1 - problem.fixed_point_map(z)[0] ** 2).unsqueeze(1)
    assert float(torch.linalg.eigvals(weights).abs().max()) == pytest.approx(1.4, rel=1e-9)


def test_the_collection_has_the_benchmark_sizes():
    problems = np_.collection()
    assert len({p.name for p in problems}) == len(problems)
    assert all(50 <= p.size <= 1000 for p in problems if p.source != "tanh map")
    assert sum(p.source == "MGH" for p in problems) >= 8
    tanh_maps = [p for p in problems if p.source == "tanh map"]
    assert len(tanh_maps) >= 3 and all(p.size == 64 for p in tanh_maps)
    assert len(np_.collection(quick=True)) < len(problems)
