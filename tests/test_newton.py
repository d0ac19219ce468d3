"""Newton-Krylov: quadratic convergence, the line search, the evaluation budget, per-sample
independence and forward-mode products through real cells."""

import copy
import math

import pytest
import torch
from torch import nn

import equilibria as eq
from equilibria.cells import ConvCell
from equilibria.solvers import EvaluationBudget, Newton, make_solver
from equilibria.solvers.base import forward_jvp

F64 = torch.float64


def tanh_problem(batch=4, features=16, norm=0.9, seed=2):
    """z = tanh(W z + x), ||W|| = norm < 1: a smooth contraction; the answer by long iteration."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(features, features, generator=gen, dtype=F64)
    w = w * (norm / torch.linalg.matrix_norm(w, ord=2))
    x = torch.randn(batch, features, generator=gen, dtype=F64)

    def f(z):
        return torch.tanh(z @ w.T + x)

    answer = torch.zeros_like(x)
    for _ in range(600):  # 0.9^600: far below float64 resolution
        answer = f(answer)
    return f, torch.zeros_like(x), answer


def unstable_problem(batch=3, features=8, radius=1.6, seed=3):
    """A fixed point z* whose Jacobian has spectral radius about 1.6: plain iteration runs
    away from it, while Newton converges from a start near it."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(features, features, generator=gen, dtype=F64)
    a = a * (radius / torch.linalg.eigvals(a).abs().max())
    star = torch.randn(batch, features, generator=gen, dtype=F64)
    start = star + 0.3 * torch.randn(batch, features, generator=gen, dtype=F64)

    def f(z):
        e = z - star
        return star + e @ a.T + 0.5 * (torch.sin(e) - e)

    return f, start, star


def arctan_problem():
    """F(z) = f(z) - z = -arctan(z - c): from |z - c| > 1.4 the full Newton step overshoots
    further and further (the textbook failure), while plain iteration converges."""
    c = torch.tensor([[0.5, -1.0], [2.0, 0.0], [0.0, 0.0]], dtype=F64)
    start = c + torch.tensor([[3.0, 2.5], [-4.0, 3.0], [0.5, -0.2]], dtype=F64)
    return (lambda z: z - torch.atan(z - c)), start, c


def assert_quadratic(trace, constant=100.0):
    """Per sample, every step from a residual r below 1e-2 (until round-off) ends below
    constant * r^2, and there is at least one such step. A linear rate r -> q r breaks the
    bound as soon as r < q / constant."""
    for sample in trace.T:
        steps = [(r, after) for r, after in zip(sample[:-1], sample[1:], strict=True) if r < 1e-2]
        steps = [(r, after) for r, after in steps if after > 1e-13]
        assert steps, sample
        for r, after in steps:
            assert after <= constant * r**2, (float(r), float(after))


def test_quadratic_convergence_on_a_smooth_contraction():
    f, z0, answer = tanh_problem()
    sol = eq.solve(f, z0, "newton", tol=1e-12, stop_mode="abs", max_iter=200, patience=None)
    assert sol.status == eq.Status.CONVERGED, sol.message
    torch.testing.assert_close(sol.z, answer, atol=1e-11, rtol=0)
    assert len(sol.abs_trace) <= 8  # steps, where Anderson takes about 20
    # the last step solves its linear system only as far as the loop's tolerance needs
    assert_quadratic(sol.abs_trace[:-1])


def test_quadratic_convergence_test_rejects_a_linear_method():
    """The check above fails on Anderson's (fast, but linear) convergence."""
    f, z0, _ = tanh_problem()
    sol = eq.solve(f, z0, "anderson", tol=1e-12, stop_mode="abs", max_iter=200, patience=None)
    with pytest.raises(AssertionError):
        assert_quadratic(sol.abs_trace)


def test_converges_where_plain_iteration_diverges():
    f, z0, star = unstable_problem()
    picard = eq.solve(
        f, z0, "picard", tol=1e-10, stop_mode="abs", max_iter=100, on_failure="ignore"
    )
    assert picard.status == eq.Status.DIVERGED
    sol = eq.solve(f, z0, "newton", tol=1e-12, stop_mode="abs", max_iter=200, patience=None)
    assert sol.status == eq.Status.CONVERGED, sol.message
    torch.testing.assert_close(sol.z, star, atol=1e-10, rtol=0)
    # steps that end within 100 tol solve their linear systems only as far as the tolerance
    # needs (no longer quadratic by design)
    far = sol.abs_trace.min(dim=1).values > 100 * 1e-12
    assert_quadratic(sol.abs_trace[: int(far.sum()) + 1], constant=1000.0)


def test_line_search_saves_a_start_where_the_full_step_overshoots():
    f, z0, c = arctan_problem()
    # the exact Newton step from the two far starts increases ||F|| (the textbook failure)
    residual = z0 - f(z0)  # -F
    newton_step = z0 + residual * (1 + (z0 - c) ** 2)  # F' = -1 / (1 + (z - c)^2), diagonal
    assert ((newton_step - f(newton_step)).norm(dim=1) > residual.norm(dim=1))[:2].all()
    options = dict(tol=1e-10, stop_mode="abs", max_iter=100, on_failure="ignore")
    sol = eq.solve(f, z0, Newton(), **options)
    assert sol.status == eq.Status.CONVERGED, sol.message
    torch.testing.assert_close(sol.z, c, atol=1e-10, rtol=0)
    assert sol.abs_trace[1].lt(sol.abs_trace[0]).all()  # every accepted step decreases ||F||
    # without backtracks (and without the full step after failed searches), a sample whose
    # full Newton step increases ||F|| stays where it is (it never takes the plain step
    # z <- f(z)), while the near one converges
    full = eq.solve(f, z0, Newton(max_backtracks=0, jump_after=0), **options)
    assert full.converged.tolist() == [False, False, True]
    torch.testing.assert_close(
        full.abs_trace[:, :2], full.abs_trace[:1, :2].expand(len(full.abs_trace), 2)
    )


def test_products_are_counted_by_the_budget():
    f, z0, _ = tanh_problem()
    budget = EvaluationBudget(f, 10)
    jv = budget.jvp(z0, torch.ones_like(z0))
    assert budget.count == 1 and budget.remaining == 9
    h = 1e-6
    reference = (f(z0 + h) - f(z0 - h)) / (2 * h)
    torch.testing.assert_close(jv, reference, atol=1e-8, rtol=0)


def test_samples_are_independent():
    """Each sample's residuals, step by step, are those of the same sample solved alone."""
    f, z0, _ = tanh_problem(batch=3)
    gen = torch.Generator().manual_seed(7)
    z0 = 3.0 * torch.randn(z0.shape, generator=gen, dtype=F64) * torch.tensor([[0.1], [1], [3]])
    options = dict(tol=1e-11, stop_mode="abs", max_iter=300, patience=None)
    together = eq.solve(f, z0, "newton", **options)
    for i in range(3):
        alone = eq.solve(
            lambda z, i=i: f(z.expand(3, -1))[i : i + 1], z0[i : i + 1], "newton", **options
        )
        steps = min(len(alone.abs_trace), len(together.abs_trace))
        torch.testing.assert_close(
            together.abs_trace[:steps, i], alone.abs_trace[:steps, 0], rtol=1e-6, atol=1e-13
        )
        torch.testing.assert_close(together.z[i], alone.z[0], atol=1e-12, rtol=0)


def test_tuple_states():
    target_a = torch.randn(3, 2, 4, 4, dtype=F64)
    target_b = torch.randn(3, 5, dtype=F64)

    def f(z):
        a, b = z
        return 0.5 * torch.tanh(a) + target_a, torch.sin(b) * 0.3 + target_b + 0.1 * a.mean()

    z0 = (torch.zeros(3, 2, 4, 4, dtype=F64), torch.zeros(3, 5, dtype=F64))
    sol = eq.solve(f, z0, "newton", tol=1e-11, stop_mode="abs", max_iter=100)
    assert isinstance(sol.z, tuple) and [t.shape for t in sol.z] == [t.shape for t in z0]
    image = f(sol.z)
    for part, fixed in zip(sol.z, image, strict=True):
        torch.testing.assert_close(part, fixed, atol=1e-10, rtol=0)


def test_gradients_through_the_solve_match_the_implicit_function_theorem():
    """Under grad mode (the unrolled backward) the solve is differentiable, products included."""
    f0, z0, _ = tanh_problem(batch=2, features=6)
    gen = torch.Generator().manual_seed(5)
    w = (0.3 * torch.randn(6, 6, generator=gen, dtype=F64)).requires_grad_()
    x = torch.randn(2, 6, generator=gen, dtype=F64, requires_grad=True)

    def f(z):
        return torch.tanh(z @ w.T + x)

    sol = eq.solve(f, torch.zeros(2, 6, dtype=F64), "newton", tol=1e-13, stop_mode="abs")
    upstream = torch.randn(2, 6, generator=gen, dtype=F64)
    gx, gw = torch.autograd.grad((sol.z * upstream).sum(), (x, w))
    z = sol.z.detach()
    s = 1 - torch.tanh(z @ w.detach().T + x.detach()).square()  # tanh' at the fixed point
    eye = torch.eye(6, dtype=F64)
    for i in range(2):  # (I - J)^-T u, J = diag(s) W; dL/dx = that times diag(s)
        jac = s[i, :, None] * w.detach()
        adjoint = torch.linalg.solve((eye - jac).T, upstream[i])
        torch.testing.assert_close(gx[i], adjoint * s[i], atol=1e-10, rtol=0)
    reference_w = sum(
        torch.outer(
            torch.linalg.solve((eye - s[i, :, None] * w.detach()).T, upstream[i]) * s[i], z[i]
        )
        for i in range(2)
    )
    torch.testing.assert_close(gw, reference_w, atol=1e-10, rtol=0)


class TransformerCell(nn.Module):
    def __init__(self, tokens=3, width=8):
        super().__init__()
        self.shape = (tokens, width)
        self.layer = nn.TransformerEncoderLayer(width, 2, 16, dropout=0.0, batch_first=True)

    def forward(self, z, x):
        return self.layer(z.reshape(-1, *self.shape) + x.reshape(-1, *self.shape)).flatten(1)


class NormalizedConvCell(nn.Module):
    def __init__(self, channels=4, size=5):
        super().__init__()
        self.shape = (channels, size, size)
        conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv = nn.utils.parametrizations.weight_norm(conv)
        self.norm = nn.GroupNorm(2, channels)

    def forward(self, z, x):
        image = z.reshape(-1, *self.shape)
        return self.norm(torch.tanh(self.conv(image) + x.reshape(-1, *self.shape))).flatten(1)


class FlatConvCell(nn.Module):
    def __init__(self, channels=4, size=5):
        super().__init__()
        self.shape = (channels, size, size)
        self.cell = ConvCell(channels)

    def forward(self, z, x):
        image = z.reshape(-1, *self.shape)
        return self.cell(image, x.reshape(-1, *self.shape)).flatten(1)


CELLS = {
    "conv-groupnorm": FlatConvCell,
    "weight-norm": NormalizedConvCell,
    "transformer": TransformerCell,
}


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("cell", CELLS)
def test_forward_mode_products_through_cells_without_grad(cell, mode):
    """Forward-mode products match central differences in train and eval mode under no_grad
    (the transformer's fused inference path and flash attention have no forward-mode formula:
    the product runs them in their composite form, and the global switch comes back)."""
    torch.manual_seed(0)
    module = getattr(CELLS[cell]().double(), mode)()
    features = math.prod(module.shape)
    z, x, v = (torch.randn(2, features, dtype=F64) for _ in range(3))
    fastpath = torch.backends.mha.get_fastpath_enabled()
    with torch.no_grad():
        jv = forward_jvp(lambda z: module(z, x), z, v)
        h = 1e-6
        reference = (module(z + h * v, x) - module(z - h * v, x)) / (2 * h)
    torch.testing.assert_close(jv, reference, atol=1e-7, rtol=1e-6)
    assert torch.backends.mha.get_fastpath_enabled() == fastpath


def test_solves_a_conv_cell_without_grad():
    torch.manual_seed(0)
    cell = FlatConvCell().double().eval()
    x = torch.randn(2, 100, dtype=F64)
    with torch.no_grad():
        sol = eq.solve(lambda z: cell(z, x), torch.zeros_like(x), "newton", tol=1e-10, max_iter=60)
    assert sol.status == eq.Status.CONVERGED, sol.message


class SquareWithoutForwardMode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return a * a

    @staticmethod
    def backward(ctx, grad):
        (a,) = ctx.saved_tensors
        return 2 * a * grad


def test_difference_products_where_forward_mode_is_missing():
    """A custom op without a forward-mode formula: the error names the way out, which works."""

    def f(z):
        return 0.5 * SquareWithoutForwardMode.apply(z) + 0.25

    z0 = torch.zeros(2, 3, dtype=F64)
    with pytest.raises(NotImplementedError, match='jvp="difference"'):
        eq.solve(f, z0, "newton", tol=1e-10)
    sol = eq.solve(f, z0, Newton(jvp="difference"), tol=1e-10, stop_mode="abs", max_iter=40)
    assert sol.status == eq.Status.CONVERGED, sol.message
    torch.testing.assert_close(sol.z, torch.full_like(z0, 1 - 0.5**0.5), atol=1e-10, rtol=0)


def test_registry_and_hyperparameters():
    assert eq.SOLVERS["newton"] is Newton
    assert make_solver("newton", {"k": 4}) == Newton(k=4)
    assert Newton() == Newton(
        k=40, recycle=5, cycles=3, eta_max=0.5, max_backtracks=4, jvp="forward"
    )
    assert copy.deepcopy(Newton(k=3)) == Newton(k=3)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"k": 0}, "Newton k must be an integer >= 1"),
        ({"k": 2.5}, "Newton k must be an integer >= 1"),
        ({"eta_max": 1.0}, r"Newton eta_max must lie in \[0, 1\)"),
        ({"eta_max": -0.1}, r"Newton eta_max must lie in \[0, 1\)"),
        ({"max_backtracks": -1}, "Newton max_backtracks must be an integer >= 0"),
        ({"recycle": -1}, "Newton recycle must be an integer >= 0"),
        ({"cycles": 0}, "Newton cycles must be an integer >= 1"),
        ({"jump_after": -1}, "Newton jump_after must be an integer >= 0"),
        (
            {"jvp": "reverse"},
            "Newton jvp='reverse' is not valid; choose one of forward, difference",
        ),
    ],
)
def test_bad_hyperparameters_are_rejected(options, message):
    with pytest.raises(ValueError, match=message):
        Newton(**options)


# --- globalization on classic problems and repelling maps ------------------------------------


def boundary_value_problem(n=100):
    """The discrete boundary value problem of Moré, Garbow and Hillstrom, F(x) = 0 with
    F_i = 2 x_i - x_{i-1} - x_{i+1} + h^2 (x_i + t_i + 1)^3 / 2, x_0 = x_{n+1} = 0."""
    h = 1.0 / (n + 1)
    t = torch.arange(1, n + 1, dtype=F64) * h

    def residual(x):
        pad = torch.nn.functional.pad(x, (1, 1))
        return 2 * x - pad[:, :-2] - pad[:, 2:] + h * h * (x + t + 1) ** 3 / 2

    return residual, (t * (t - 1)).unsqueeze(0)


def broyden_tridiagonal(n=100):
    def residual(x):
        pad = torch.nn.functional.pad(x, (1, 1))
        return (3 - 2 * x) * x - pad[:, :-2] - 2 * pad[:, 2:] + 1

    return residual, -torch.ones(1, n, dtype=F64)


def chandrasekhar(c, n=100):
    mu = (torch.arange(1, n + 1, dtype=F64) - 0.5) / n
    a = c / (2 * n) * mu[:, None] / (mu[:, None] + mu[None, :])
    return (lambda x: x - 1 / (1 - x @ a.T)), torch.ones(1, n, dtype=F64)


CLASSIC = {
    "boundary value": boundary_value_problem,
    "broyden tridiagonal": broyden_tridiagonal,
    "chandrasekhar 0.9": lambda: chandrasekhar(0.9),
    "chandrasekhar 0.9999": lambda: chandrasekhar(0.9999),
}


def scipy_newton_krylov_evaluations(residual, x0, f_tol):
    """Evaluations of F that SciPy's newton_krylov takes to max |F| <= f_tol (None: no SciPy)."""
    scipy_optimize = pytest.importorskip("scipy.optimize")
    count = [0]

    def counted(x):
        count[0] += 1
        return residual(torch.from_numpy(x).unsqueeze(0)).squeeze(0).numpy()

    scipy_optimize.newton_krylov(counted, x0.squeeze(0).numpy(), f_tol=f_tol, maxiter=500)
    return count[0]


@pytest.mark.parametrize("problem", CLASSIC)
def test_classic_problems_in_no_more_evaluations_than_scipy(problem):
    """z = z - F(z) at rel tol 1e-8; SciPy stops at max |F| <= 1e-8 ||z*|| (looser)."""
    residual, x0 = CLASSIC[problem]()
    sol = eq.solve(lambda z: z - residual(z), x0, "newton", tol=1e-8, max_iter=2000)
    assert sol.status == eq.Status.CONVERGED, sol.message
    scipy_nfe = scipy_newton_krylov_evaluations(residual, x0, 1e-8 * float(sol.z.norm()))
    assert sol.nfe <= scipy_nfe, (sol.nfe, scipy_nfe)


def repelling_tanh_map(seed, features=64, batch=8, scale=0.01):
    """tanh(W z + x) with spectral radius of W in 1.3-1.5: z <- f(z) runs away from 0."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(features, features, generator=gen, dtype=F64)
    w = w * ((1.3 + 0.04 * seed) / torch.linalg.eigvals(w).abs().max())
    x = scale * torch.randn(batch, features, generator=gen, dtype=F64)
    return (lambda z: torch.tanh(z @ w.T + x)), torch.zeros(batch, features, dtype=F64)


def dense_newton_converges(f, z0, steps=30, tol=1e-8):
    """Plain Newton with the exact Jacobian (torch.func.jacrev) and no line search."""
    z, rows, eye = z0.clone(), torch.arange(z0.shape[0]), torch.eye(z0.shape[1], dtype=F64)
    for _ in range(steps):
        jacobian = torch.func.jacrev(f)(z)[rows, :, rows, :]
        z = z - torch.linalg.solve(jacobian - eye, (f(z) - z).unsqueeze(2)).squeeze(2)
    fz = f(z)
    return (fz - z).norm(dim=1) / fz.norm(dim=1) <= tol


@pytest.mark.parametrize("seed", [0, 1, 4])
def test_converges_on_repelling_maps_where_dense_newton_does(seed):
    """No plain step z <- f(z) on a map that repels: ||F|| never rises, and every sample
    dense Newton solves is solved within 400 evaluations."""
    f, z0 = repelling_tanh_map(seed)
    picard = eq.solve(f, z0, "picard", tol=1e-8, max_iter=100, on_failure="ignore")
    assert picard.status != eq.Status.CONVERGED
    dense = dense_newton_converges(f, z0)
    sol = eq.solve(f, z0, "newton", tol=1e-8, max_iter=400, patience=None, on_failure="ignore")
    assert sol.converged[dense].all(), sol.message
    assert (sol.abs_trace[1:] <= sol.abs_trace[:-1]).all()


def test_a_stalled_sample_takes_the_full_newton_step():
    """The benchmark's tanh map (rho 1.4, seed 4): from z = 0 the line search leads to a
    local minimum of ||F|| (0.035) that is no root, where no shortened step decreases it; the
    full Newton step taken there reaches the root, as plain dense Newton does (1496
    evaluations)."""
    from benchmarks.nonlinear_problems import tanh_map

    problem = tanh_map(4, 1.4)
    options = dict(tol=1e-8, max_iter=2000, stop_mode="abs", patience=None, on_failure="ignore")
    sol = eq.solve(problem.fixed_point_map, problem.x0(), Newton(), **options)
    assert sol.status == eq.Status.CONVERGED and sol.nfe <= 1000, sol.message
    stalled = eq.solve(problem.fixed_point_map, problem.x0(), Newton(jump_after=0), **options)
    assert stalled.status != eq.Status.CONVERGED
