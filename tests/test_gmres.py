"""GMRES: the batched Krylov core on linear systems, and the solver on affine fixed points
(the adjoint equation among them)."""

import pytest
import torch

import equilibria as eq
from equilibria.cells import TanhCell
from equilibria.solvers import GMRES, make_solver
from equilibria.solvers.krylov import gmres

F64 = torch.float64


def matrix_operator(a):
    """v -> (A_i v_i per sample, no rounding worth mentioning)."""

    def apply(v):
        product = torch.einsum("bij,bj->bi", a, v)
        return product, torch.finfo(v.dtype).eps * product.norm(dim=1)

    return apply


def random_systems(batch=3, n=10, seed=0):
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(batch, n, n, generator=gen, dtype=F64) + 4 * torch.eye(n, dtype=F64)
    b = torch.randn(batch, n, generator=gen, dtype=F64)
    return a, b


def true_residual(a, b, x):
    return (b - torch.einsum("bij,bj->bi", a, x)).norm(dim=1)


def test_core_solves_batched_systems_in_n_products():
    a, b = random_systems()
    result = gmres(matrix_operator(a), b, max_iter=15, rtol=0.0)
    torch.testing.assert_close(result.x, torch.linalg.solve(a, b), atol=1e-12, rtol=0)
    assert result.products == 10  # the Krylov space is exhausted after n products
    assert result.residual.max() < 1e-12


def test_core_residual_estimate_is_the_true_residual():
    a, b = random_systems()
    for max_iter in (1, 3, 6):
        result = gmres(matrix_operator(a), b, max_iter=max_iter, rtol=0.0)
        assert result.products == max_iter
        torch.testing.assert_close(
            result.residual, true_residual(a, b, result.x), rtol=1e-10, atol=0
        )


def test_core_samples_stop_at_their_own_tolerance_and_then_stay_put():
    a, b = random_systems()
    rtol = torch.tensor([1e-1, 1e-4, 1e-12], dtype=F64)
    result = gmres(matrix_operator(a), b, max_iter=15, rtol=rtol)
    residual = true_residual(a, b, result.x)
    assert (residual <= rtol * b.norm(dim=1) * (1 + 1e-9)).all()
    for i in range(3):  # the same sample alone with its tolerance: the same x
        alone = gmres(matrix_operator(a[i : i + 1]), b[i : i + 1], max_iter=15, rtol=float(rtol[i]))
        torch.testing.assert_close(result.x[i], alone.x[0], atol=1e-14, rtol=0)
    # the loose sample did stop early: its residual is far above the tight one's
    assert residual[0] > 1e-6 * b[0].norm()


def test_core_breakdown_and_singular_operators_give_no_nan():
    n = 6
    b = torch.randn(3, n, dtype=F64)
    identity = torch.eye(n, dtype=F64).expand(3, n, n)
    result = gmres(matrix_operator(identity), b, max_iter=5, rtol=0.0)
    assert result.products == 1  # A b = b: exact after one product (breakdown)
    torch.testing.assert_close(result.x, b, atol=1e-15, rtol=0)
    zero = torch.zeros(3, n, n, dtype=F64)
    result = gmres(matrix_operator(zero), b, max_iter=5, rtol=0.0)
    assert torch.equal(result.x, torch.zeros_like(b))  # no direction: x stays at x0
    torch.testing.assert_close(result.residual, b.norm(dim=1))
    diagonal = torch.diag_embed(torch.tensor([1.0, 2.0, 3.0], dtype=F64).repeat(3, 2))
    result = gmres(matrix_operator(diagonal), b, max_iter=6, rtol=0.0)
    assert result.products == 3  # three distinct eigenvalues: exact after three products
    torch.testing.assert_close(result.x, torch.linalg.solve(diagonal, b), atol=1e-13, rtol=0)
    solved = gmres(matrix_operator(diagonal), torch.zeros(3, n, dtype=F64), max_iter=4, rtol=0.0)
    assert solved.products == 0 and torch.equal(solved.x, torch.zeros(3, n, dtype=F64))


def test_core_takes_no_direction_from_products_lost_in_their_rounding():
    """Products no longer than their stated rounding are noise: x stays at zero."""
    gen = torch.Generator().manual_seed(2)

    def noise(v):
        product = 1e-20 * torch.randn(v.shape, generator=gen, dtype=F64)
        return product, torch.full((v.shape[0],), 1e-16, dtype=F64)

    b = torch.randn(3, 6, dtype=F64)
    result = gmres(noise, b, max_iter=5, rtol=0.0)
    assert result.products == 1 and torch.equal(result.x, torch.zeros_like(b))
    torch.testing.assert_close(result.residual, b.norm(dim=1))


def test_core_starts_from_an_initial_guess():
    a, b = random_systems()
    answer = torch.linalg.solve(a, b)
    near = answer + 1e-3 * torch.randn_like(answer)
    result = gmres(matrix_operator(a), b, max_iter=3, rtol=0.0, x0=near)
    assert result.products == 4  # one for the initial residual
    assert (true_residual(a, b, result.x) < true_residual(a, b, near)).all()


def affine_problem(n=12, batch=3, radius=0.9, seed=1):
    """z = A z + b with the spectral radius of A given (above 1: plain iteration diverges, but
    I - A stays invertible); the answer from torch.linalg.solve."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=gen, dtype=F64)
    a = a * (radius / torch.linalg.eigvals(a).abs().max())
    b = torch.randn(batch, n, generator=gen, dtype=F64)
    answer = torch.linalg.solve(torch.eye(n, dtype=F64) - a, b.T).T
    return (lambda z: z @ a.T + b), torch.zeros(batch, n, dtype=F64), answer


@pytest.mark.parametrize("radius", [0.9, 2.5])
def test_affine_fixed_point_with_finite_termination(radius):
    n = 12
    f, z0, answer = affine_problem(n=n, radius=radius)
    if radius > 1:
        picard = eq.solve(f, z0, "picard", tol=1e-10, max_iter=100, on_failure="ignore")
        assert picard.status == eq.Status.DIVERGED
    sol = eq.solve(f, z0, "gmres", tol=1e-10, stop_mode="abs", max_iter=200)
    assert sol.status == eq.Status.CONVERGED, sol.message
    torch.testing.assert_close(sol.z, answer, atol=1e-10, rtol=0)
    # one cycle of n products, plus f at the start and at the answer
    assert sol.nfe <= n + 2 and len(sol.abs_trace) == 2


def test_short_cycles_restart_and_still_converge():
    f, z0, answer = affine_problem(radius=0.9)
    sol = eq.solve(f, z0, GMRES(restart=4), tol=1e-10, stop_mode="abs", max_iter=300)
    assert sol.status == eq.Status.CONVERGED, sol.message
    torch.testing.assert_close(sol.z, answer, atol=1e-9, rtol=0)
    cycles = len(sol.abs_trace) - 1
    assert cycles > 1 and sol.nfe == 1 + 5 * cycles  # four products and one evaluation each


def test_a_cycle_ends_where_the_loop_stops():
    """A loose solve: the cycle stops once the loop's tolerance is met (with a margin), not
    after `restart` products."""
    f, z0, _ = affine_problem(radius=0.9)
    tol = 0.05 * float(f(z0).norm(dim=1).min())
    sol = eq.solve(f, z0, GMRES(restart=30), tol=tol, stop_mode="abs", max_iter=200)
    assert sol.status == eq.Status.CONVERGED and len(sol.abs_trace) == 2
    assert sol.nfe < 30
    assert (sol.abs_trace[1] <= 0.5 * tol * (1 + 1e-9)).all()


def test_cycle_tol_ends_cycles_early():
    """Without a tolerance to stop at, cycle_tol alone ends each cycle."""
    f, z0, _ = affine_problem(radius=0.9)
    options = dict(tol=0.0, stop_mode="abs", max_iter=40, on_failure="ignore", patience=None)
    full = eq.solve(f, z0, GMRES(restart=30), **options)
    early = eq.solve(f, z0, GMRES(restart=30, cycle_tol=0.02), **options)
    assert len(early.abs_trace) > len(full.abs_trace)  # more, shorter cycles
    first = early.abs_trace[1] / early.abs_trace[0]
    assert (first <= 0.02 * (1 + 1e-9)).all() and (first > 1e-4).any()


def test_samples_are_independent():
    """Each sample's residuals, cycle by cycle, are those of the same sample solved alone."""
    f, _, answer = affine_problem(n=8, radius=0.9)
    gen = torch.Generator().manual_seed(3)
    z0 = torch.randn(3, 8, generator=gen, dtype=F64) * torch.tensor([[1e-2], [1.0], [1e2]])
    options = dict(tol=1e-12, max_iter=300, patience=None)
    restart = GMRES(restart=3)  # several cycles, so that the samples part ways
    together = eq.solve(f, z0, restart, **options)
    assert together.status == eq.Status.CONVERGED, together.message
    for i in range(3):
        alone = eq.solve(
            lambda z, i=i: f(z.expand(3, -1))[i : i + 1], z0[i : i + 1], restart, **options
        )
        steps = min(len(alone.abs_trace), len(together.abs_trace))
        torch.testing.assert_close(
            together.abs_trace[:steps, i], alone.abs_trace[:steps, 0], rtol=1e-6, atol=1e-12
        )
        torch.testing.assert_close(together.z[i], answer[i], atol=0, rtol=1e-9)


def adjoint_problem(n=6, batch=2, seed=4):
    """The adjoint equation y = y J + g of the implicit backward at a point z of a tanh cell,
    one vector-Jacobian product per evaluation; the answer from dense Jacobians."""
    gen = torch.Generator().manual_seed(seed)
    w = 0.4 * torch.randn(n, n, generator=gen, dtype=F64)
    z = torch.randn(batch, n, generator=gen, dtype=F64, requires_grad=True)
    fz = torch.tanh(z @ w.T)
    g = torch.randn(batch, n, generator=gen, dtype=F64)
    jac = (1 - fz.detach().square()).unsqueeze(2) * w  # per sample diag(tanh') W
    answer = torch.linalg.solve((torch.eye(n, dtype=F64) - jac).transpose(1, 2), g)
    return z, fz, g, answer


@pytest.mark.parametrize("grad_mode", [False, True])
def test_solves_the_adjoint_equation_under_either_grad_mode(grad_mode):
    """In a backward hook grad mode is off, or on under create_graph=True."""
    z, fz, g, answer = adjoint_problem()

    def vjp_plus_grad(y):
        (vjp,) = torch.autograd.grad(fz, z, y, retain_graph=True, create_graph=grad_mode)
        return vjp + g

    with torch.set_grad_enabled(grad_mode):
        sol = eq.solve(vjp_plus_grad, g, "gmres", tol=1e-12, stop_mode="abs", max_iter=50)
    assert sol.status == eq.Status.CONVERGED, sol.message
    assert sol.nfe <= 6 + 2
    torch.testing.assert_close(sol.z.detach(), answer, atol=1e-12, rtol=0)
    assert sol.z.requires_grad == grad_mode


def test_as_the_implicit_backwards_solver():
    torch.manual_seed(0)
    cell = TanhCell(6, contraction=0.9).double()
    x = torch.randn(3, 6, dtype=F64, requires_grad=True)
    grads = []
    for solver in ("gmres", "anderson"):
        x.grad = None
        deq = eq.DEQ(cell, "anderson", tol=1e-12, stop_mode="abs", max_iter=200)
        deq.backward = eq.Implicit(solver, tol=1e-12, stop_mode="abs", max_iter=200)
        (deq(x).sin().sum()).backward()
        grads.append(x.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], atol=1e-10, rtol=0)


def test_differentiable_under_grad_mode():
    """Unrolled through one exact cycle, the gradient is the exact (I - A)^-T one."""
    n = 6
    gen = torch.Generator().manual_seed(5)
    a = (0.3 * torch.randn(n, n, generator=gen, dtype=F64)).requires_grad_()
    b = torch.randn(2, n, generator=gen, dtype=F64, requires_grad=True)
    sol = eq.solve(lambda z: z @ a.T + b, torch.zeros(2, n, dtype=F64), "gmres", tol=1e-13)
    upstream = torch.randn(2, n, generator=gen, dtype=F64)
    (grad_b,) = torch.autograd.grad((sol.z * upstream).sum(), b)
    expected = torch.linalg.solve(torch.eye(n, dtype=F64) - a.detach().T, upstream.T).T
    torch.testing.assert_close(grad_b, expected, atol=1e-12, rtol=0)


def test_tuple_states():
    gen = torch.Generator().manual_seed(6)
    target_a = torch.randn(3, 2, 4, 4, generator=gen, dtype=F64)
    target_b = torch.randn(3, 5, generator=gen, dtype=F64)

    def f(z):
        a, b = z
        return 0.5 * a + target_a + 0.1 * b.sum(dim=1).view(3, 1, 1, 1), -2.0 * b + target_b

    z0 = (torch.zeros(3, 2, 4, 4, dtype=F64), torch.zeros(3, 5, dtype=F64))
    sol = eq.solve(f, z0, "gmres", tol=1e-11, stop_mode="abs", max_iter=100)
    assert isinstance(sol.z, tuple) and [t.shape for t in sol.z] == [t.shape for t in z0]
    b = target_b / 3
    torch.testing.assert_close(sol.z[1], b, atol=1e-11, rtol=0)
    torch.testing.assert_close(
        sol.z[0], 2 * (target_a + 0.1 * b.sum(dim=1).view(3, 1, 1, 1)), atol=1e-11, rtol=0
    )


def test_registry_and_hyperparameters():
    assert eq.SOLVERS["gmres"] is GMRES
    assert make_solver("gmres", {"restart": 10}) == GMRES(restart=10)
    assert GMRES() == GMRES(restart=20, cycle_tol=0.0)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"restart": 0}, "GMRES restart must be an integer >= 1"),
        ({"restart": "20"}, "GMRES restart must be an integer >= 1"),
        ({"cycle_tol": 1.0}, r"GMRES cycle_tol must lie in \[0, 1\)"),
        ({"cycle_tol": -1e-3}, r"GMRES cycle_tol must lie in \[0, 1\)"),
    ],
)
def test_bad_hyperparameters_are_rejected(options, message):
    with pytest.raises(ValueError, match=message):
        GMRES(**options)


def test_core_searches_augment_directions_first():
    """A direction holding the answer solves the system in one product; a zero or repeated
    direction is skipped, and the residual estimate stays the true one."""
    a, b = random_systems()
    answer = torch.linalg.solve(a, b)
    augment = torch.stack([3 * answer, answer, torch.randn_like(answer)], dim=1)
    augment[1, 0] = 0  # sample 1: no first direction, its answer comes second (repeated: kept)
    result = gmres(matrix_operator(a), b, max_iter=10, rtol=1e-12, augment=augment)
    torch.testing.assert_close(result.x, answer, atol=1e-12, rtol=0)
    assert result.products == 2
    noise = torch.randn(3, 4, 10, dtype=F64, generator=torch.Generator().manual_seed(1))
    for max_iter in (2, 5, 8):
        result = gmres(matrix_operator(a), b, max_iter=max_iter, rtol=0.0, augment=noise)
        torch.testing.assert_close(
            result.residual, true_residual(a, b, result.x), rtol=1e-9, atol=1e-12
        )
