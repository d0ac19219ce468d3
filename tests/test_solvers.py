"""Every solver x dtype on problems with known answers, plus the loop's stopping rules."""

import math

import pytest
import torch
from problems import PROBLEMS, affine, cosine

import equilibria as eq
from equilibria.solvers.anderson import Anderson
from equilibria.solvers.broyden import Broyden

SOLVERS = {
    "picard": eq.Picard(),
    "picard-damped": eq.Picard(damping=0.7),
    "anderson": eq.Anderson(),
    "anderson-damped": eq.Anderson(m=3, beta=0.8),
    "broyden": eq.Broyden(),
    "broyden-linesearch": eq.Broyden(line_search=True),
}
KRYLOV = {  # gmres: for affine maps only
    "newton": eq.Newton(),
    "newton-difference": eq.Newton(jvp="difference"),
    "gmres": eq.GMRES(),
    "gmres-short": eq.GMRES(restart=3),
}
# the splitting solvers need a monotone cell's splitting: tests/test_monotone.py
GENERAL = [name for name, cls in eq.SOLVERS.items() if not cls.needs_splitting]
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}
ANSWER_TOL = {torch.float64: 1e-8, torch.float32: 1e-4}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("problem", PROBLEMS)
@pytest.mark.parametrize("solver", SOLVERS)
def test_known_answers(solver, problem, dtype):
    p = PROBLEMS[problem](dtype)
    sol = eq.solve(p.f, p.z0, SOLVERS[solver], tol=TOL[dtype], stop_mode="abs", max_iter=500)
    assert sol.status == eq.Status.CONVERGED, sol.message
    assert sol.converged.all()
    assert sol.z.dtype == dtype and sol.z.shape == p.z0.shape
    torch.testing.assert_close(sol.z, p.answer, atol=ANSWER_TOL[dtype], rtol=0)
    assert sol.abs_residual.max() <= TOL[dtype]
    assert isinstance(sol.nfe, int) and 1 <= sol.nfe <= 500


@pytest.mark.parametrize("solver", ["anderson", "broyden"])
def test_accelerated_solvers_beat_plain_iteration(solver):
    p = affine(torch.float64, norm=0.97, slow=True)
    plain = eq.solve(p.f, p.z0, "picard", tol=1e-8, stop_mode="abs", max_iter=2000, patience=None)
    fast = eq.solve(p.f, p.z0, solver, tol=1e-8, stop_mode="abs", max_iter=2000)
    assert fast.status == plain.status == eq.Status.CONVERGED
    assert fast.nfe * 3 < plain.nfe


@pytest.mark.parametrize("solver", GENERAL)
def test_tuple_and_list_states(solver):
    """Multi-resolution states: each part keeps its shape; the answer is reached part by part."""
    target_a = torch.randn(3, 2, 4, 4)
    target_b = torch.randn(3, 5)

    def f(z):
        a, b = z
        return [0.5 * a + 0.5 * target_a + 0.0 * b.sum(), 0.3 * b + 0.7 * target_b]

    z0 = [torch.zeros(3, 2, 4, 4), torch.zeros(3, 5)]
    sol = eq.solve(f, z0, solver, tol=1e-6, stop_mode="abs")
    assert isinstance(sol.z, list) and [t.shape for t in sol.z] == [t.shape for t in z0]
    torch.testing.assert_close(sol.z[0], target_a, atol=1e-5, rtol=0)
    torch.testing.assert_close(sol.z[1], target_b, atol=1e-5, rtol=0)
    sol_t = eq.solve(lambda z: tuple(f(z)), tuple(z0), solver, tol=1e-6, stop_mode="abs")
    assert isinstance(sol_t.z, tuple)


@pytest.mark.parametrize("solver", GENERAL)
def test_bfloat16_states_do_not_crash(solver):
    p = cosine(torch.float32)
    z0 = p.z0.bfloat16()
    sol = eq.solve(torch.cos, z0, solver, tol=1e-2, max_iter=40, on_failure="ignore")
    assert sol.z.dtype == torch.bfloat16
    assert torch.isfinite(sol.z.float()).all()
    torch.testing.assert_close(sol.z.float(), p.answer, atol=2e-2, rtol=0)


@pytest.mark.parametrize("solver", ["anderson", "broyden", "broyden-linesearch", *KRYLOV])
def test_solver_arithmetic_ignores_autocast(solver):
    """Under bf16 autocast a float32 solve takes the same iterates as without it (the solvers'
    products stay float32), while f itself is still evaluated under the caller's autocast."""
    gen = torch.Generator().manual_seed(4)
    w = torch.randn(12, 12, generator=gen) * 0.25
    x = torch.randn(3, 12, generator=gen)

    def run():
        points, autocast = [], []

        def f(z):  # elementwise ops and a sum only: autocast leaves them in float32
            points.append(z.clone())
            autocast.append(torch.is_autocast_enabled("cpu"))
            return torch.tanh((z.unsqueeze(1) * w).sum(dim=2) + x)

        options = dict(tol=0.0, max_iter=20, patience=None, on_failure="ignore")
        sol = eq.solve(f, torch.zeros(3, 12), {**SOLVERS, **KRYLOV}[solver], **options)
        assert sol.z.dtype == torch.float32
        return points, autocast

    plain, plain_autocast = run()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast, cast_autocast = run()
    assert len(plain) == len(cast) == 20
    assert not any(plain_autocast) and all(cast_autocast)
    for k, (a, b) in enumerate(zip(plain, cast, strict=True)):
        assert torch.equal(a, b), f"evaluation {k} differs"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("f", ["identity", "constant", "no_fixed_point"])
def test_anderson_never_nan_on_singular_history(f, dtype):
    """Zero or repeated residual differences make the least-squares system singular: the mixing
    weights are then zero, so each step is the plain step z + g (finite, and where it belongs)."""
    maps = {
        "identity": lambda z: z,  # every point is fixed: g = 0, all differences vanish
        "constant": lambda z: torch.ones_like(z),  # after one step g = 0: differences vanish
        "no_fixed_point": lambda z: z + 1.0,  # g = 1 always: every dg is exactly 0
    }
    expected = {  # the k-th iterate
        "identity": lambda z0, k: z0,
        "constant": lambda z0, k: torch.ones_like(z0),
        "no_fixed_point": lambda z0, k: z0 + k,
    }
    fn = maps[f]
    solver = Anderson(m=3)
    budget = eq.solvers.EvaluationBudget(fn, 0)
    z0 = torch.randn(4, 6, dtype=dtype)
    z, fz = z0, fn(z0)
    state = solver.init(z, fz, fz - z)
    for k in range(1, 9):  # past a full history, so the least-squares step runs with m slots
        step = solver.step(budget, z, fz, fz - z, state)
        z, state = step.z, step.state
        fz = fn(z)
        assert torch.isfinite(z).all(), k
        torch.testing.assert_close(z, expected[f](z0, k), rtol=0, atol=1e-5 * k)
    assert state.stored == 3 and budget.count == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("solver", [*SOLVERS, *KRYLOV])
def test_no_fixed_point_is_never_reported_as_converged(solver, dtype):
    """z + 1 has no fixed point: its residual differences are round-off, and taking them for
    information jumps to where z + 1 rounds to z and the residual reads 0."""
    z0 = torch.randn(4, 6, dtype=dtype)
    solver = {**SOLVERS, **KRYLOV}[solver]
    sol = eq.solve(lambda z: z + 1.0, z0, solver, tol=1e-6, max_iter=20, on_failure="ignore")
    assert sol.status != eq.Status.CONVERGED and not sol.converged.any()
    assert sol.abs_trace.min() > 0.99 * 6**0.5  # every iterate's residual is |1| = sqrt(6)


def test_anderson_regularization_scales_with_the_problem():
    """Tight tolerances on a badly scaled problem still converge (no absolute regularization)."""
    p = affine(torch.float64, norm=0.95)
    scaled = eq.solve(
        lambda z: 1e-6 * p.f(z * 1e6), p.z0, "anderson", tol=1e-17, stop_mode="abs", max_iter=200
    )
    assert scaled.status == eq.Status.CONVERGED, scaled.message
    torch.testing.assert_close(scaled.z * 1e6, p.answer, atol=1e-8, rtol=0)


def test_anderson_forms_its_least_squares_system_in_float64():
    """Nearly parallel float32 residual differences: the step matches weights computed from the
    same float32 buffers with float64 products (float32 products are off by ~1e-3)."""
    gen = torch.Generator().manual_seed(5)
    features = 64
    a, b, g, *zs = (torch.randn(1, features, generator=gen) for _ in range(6))
    residuals = [g, g + a, g + a + (a + 1e-3 * b)]  # differences a and a + 1e-3 b
    solver = Anderson(m=2)
    budget = eq.solvers.EvaluationBudget(lambda z: z, 0)
    state = solver.init(zs[0], zs[0] + g, g)
    for z, r in zip(zs, residuals, strict=True):
        step = solver.step(budget, z, z + r, r, state)
        state = step.state
    dx, dg, g = state.dx.double(), state.dg.double(), residuals[-1].double()
    gram, rhs = dg @ dg.mT, (dg @ g.unsqueeze(2)).squeeze(2)
    gamma = solver._mixing_weights(gram, rhs, torch.float32, noise=torch.zeros(1))
    x = zs[-1].double() + g
    reference = x - (gamma.double().unsqueeze(1) @ dx).squeeze(1)
    error = (step.z.double() - reference).norm() / (reference - x).norm()
    assert error < 1e-6, float(error)


def broyden_steps(solver, p, steps):
    """Steps of `solver` on problem `p` taken by hand: yields (z, next z, state after the step).

    The state's buffers are updated in place by later steps, so read it before the next one.
    """
    budget = eq.solvers.EvaluationBudget(p.f, 10 * steps)
    z = p.z0
    fz = p.f(z)
    state = solver.init(z, fz, fz - z)
    for _ in range(steps):
        step = solver.step(budget, z, fz, fz - z, state)
        yield z, step.z, step.state
        z, state = step.z, step.state
        fz = p.f(z)


def test_broyden_memory_is_bounded():
    """Memory 4 matches unlimited memory until the first restart, then keeps converging with at
    most 4 stored pairs on a problem that takes many more steps."""
    p = affine(torch.float64, norm=0.9)
    memory = 4
    bounded, stored = [], []
    for _, z, state in broyden_steps(Broyden(memory=memory), p, 60):
        bounded.append(z)
        stored.append(state.stored)
        assert state.u.shape == state.v.shape == (3, memory, 12)
    unlimited = [z for _, z, _ in broyden_steps(Broyden(memory=100), p, memory + 2)]
    # step 1 has no pair yet; steps 2..memory+1 add pairs 1..memory; step memory+2 restarts
    for k in range(memory + 1):
        assert torch.equal(bounded[k], unlimited[k]), k
    assert not torch.allclose(bounded[memory + 1], unlimited[memory + 1])
    assert max(stored) == memory and stored.count(1) > 3  # restarted several times
    assert float((p.f(bounded[-1]) - bounded[-1]).norm(dim=1).max()) < 1e-9
    sol = eq.solve(p.f, p.z0, Broyden(memory=memory), tol=1e-9, stop_mode="abs", max_iter=300)
    assert sol.status == eq.Status.CONVERGED and sol.nfe > 3 * memory


def test_broyden_update_satisfies_the_secant_condition_also_after_a_restart():
    """Every update, including the first after each restart from H = -I, gives H dg = dz."""
    p = affine(torch.float64, norm=0.9)
    stored = []
    previous = None
    for z, _, state in broyden_steps(Broyden(memory=2), p, 9):
        if previous is not None:  # this step added the pair previous -> z
            dz = z - previous
            dg = (p.f(z) - z) - (p.f(previous) - previous)
            torch.testing.assert_close(state.apply(dg), dz, rtol=0, atol=1e-13 * dz.norm())
            stored.append(state.stored)
        previous = z
    assert stored == [1, 2, 1, 2, 1, 2, 1, 2]


def test_broyden_skips_nearly_orthogonal_pairs():
    """A pair with dz^T H dg at round-off level gives no update (it would be noise times 1e9)."""
    solver = Broyden()
    features = 8
    dz = torch.zeros(2, features)
    dz[:, 0] = 1.0
    dg = torch.zeros(2, features)
    dg[:, 1] = 1.0
    dg[0, 0] = 1e-9  # sample 0: cosine 1e-9 with H = -I; sample 1: cosine 1e-2, a usable pair
    dg[1, 0] = 1e-2
    zero = torch.zeros(2, features)
    budget = eq.solvers.EvaluationBudget(lambda z: z, 0)
    state = solver.init(zero, zero, zero)
    state = solver.step(budget, zero, zero, zero, state).state
    state = solver.step(budget, dz, dz + dg, dg, state).state
    assert state.stored == 1
    assert torch.equal(state.u[0, 0], torch.zeros(features))  # sample 0 rejected
    x = torch.randn(features)
    torch.testing.assert_close(state.apply(x.expand(2, -1))[0], -x, rtol=0, atol=0)
    torch.testing.assert_close(state.apply(dg)[1], dz[1])  # sample 1 updated


def test_broyden_line_search_counts_its_evaluations():
    calls = 0

    def f(z):
        nonlocal calls
        calls += 1
        return torch.tanh(3.0 * z) * 0.9 + 0.1  # steep: full Broyden steps overshoot

    sol = eq.solve(
        f,
        torch.full((2, 3), 2.0),
        eq.Broyden(line_search=True),
        tol=1e-8,
        stop_mode="abs",
        max_iter=60,
        on_failure="ignore",
    )
    assert sol.nfe == calls
    assert sol.nfe <= 60


@pytest.mark.parametrize("problem", ["affine", "tanh"])
@pytest.mark.parametrize("solver", [*SOLVERS, *KRYLOV])
def test_budget_is_never_exceeded_and_every_call_counts(solver, problem):
    """NFE is every call of f (Jacobian-vector products included) and never above max_iter."""
    p = PROBLEMS[problem](torch.float64)
    for max_iter in range(1, 16):
        calls: list[int] = []

        def counted(z, calls=calls):
            calls.append(1)
            return p.f(z)

        options = dict(tol=0.0, max_iter=max_iter, patience=None, on_failure="ignore")
        sol = eq.solve(counted, p.z0, {**SOLVERS, **KRYLOV}[solver], **options)
        assert sol.nfe == len(calls) <= max_iter, max_iter
    assert sol.nfe == 15  # the budget is used up, not left over


def test_best_iterate_is_returned_per_sample():
    """An oscillating map: the returned iterate is each sample's lowest-residual one."""
    scale = torch.tensor([[-0.5], [-1.2]])  # sample 0 converges, sample 1 oscillates outward

    def f(z):
        return scale * z

    sol = eq.solve(
        f, torch.ones(2, 1), "picard", tol=1e-3, stop_mode="abs", max_iter=12, on_failure="ignore"
    )
    trace = sol.abs_trace
    assert trace.shape == (12, 2)
    torch.testing.assert_close(sol.abs_residual, trace.min(dim=0).values)
    assert sol.converged.tolist() == [True, False]
    assert float(sol.z[1]) == 1.0  # the start had the smallest residual for the diverging sample


def test_stop_modes_differ_on_scale():
    big = lambda z: 0.5 * z + 1e4  # noqa: E731 - fixed point 2e4
    z0 = torch.zeros(1, 1, dtype=torch.float64)
    rel = eq.solve(big, z0, "picard", tol=1e-3, stop_mode="rel", max_iter=100)
    abs_ = eq.solve(big, z0, "picard", tol=1e-3, stop_mode="abs", max_iter=100)
    assert rel.converged.all() and abs_.converged.all()
    assert rel.nfe < abs_.nfe
    assert rel.rel_residual.item() <= 1e-3 and abs_.abs_residual.item() <= 1e-3
    torch.testing.assert_close(rel.residual, rel.rel_residual)
    torch.testing.assert_close(abs_.trace, abs_.abs_trace)


def test_stops_when_every_sample_converged_and_at_max_iter():
    p = affine(torch.float64, norm=0.5)
    sol = eq.solve(p.f, p.z0, "picard", tol=1e-6, stop_mode="abs", max_iter=500)
    assert sol.status == eq.Status.CONVERGED
    assert sol.abs_trace[-1].max() <= 1e-6 and sol.abs_trace[-2].max() > 1e-6
    capped = eq.solve(
        p.f, p.z0, "picard", tol=1e-12, stop_mode="abs", max_iter=5, on_failure="ignore"
    )
    assert capped.status == eq.Status.MAX_ITER and capped.nfe == 5
    assert capped.trace.shape[0] == 5


def test_stagnation_is_detected():
    """Picard on a rotation by a tiny angle with no contraction never improves."""
    angle = torch.tensor(0.01)
    rot = torch.tensor([[angle.cos(), -angle.sin()], [angle.sin(), angle.cos()]])
    sol = eq.solve(
        lambda z: z @ rot.T,
        torch.ones(1, 2),
        "picard",
        tol=1e-8,
        max_iter=500,
        patience=10,
        on_failure="ignore",
    )
    assert sol.status == eq.Status.STAGNATED
    assert sol.nfe < 20


def test_divergence_is_detected():
    sol = eq.solve(
        lambda z: 3.0 * z + 1.0,
        torch.zeros(2, 3),
        "picard",
        tol=1e-6,
        max_iter=200,
        on_failure="ignore",
    )
    assert sol.status == eq.Status.DIVERGED
    assert sol.nfe < 20
    # the returned iterate is each sample's best (in relative residual, which falls to 2/3)
    torch.testing.assert_close(sol.residual, sol.trace.min(dim=0).values, rtol=0, atol=0)
    torch.testing.assert_close(sol.fz, 3.0 * sol.z + 1.0, rtol=0, atol=0)
    assert sol.abs_trace[-1].min() > 1e4 * sol.abs_trace[0].max()  # stopped once it diverged


def test_divergence_is_per_sample():
    """One diverging sample does not stop the others: they go on to the tolerance, and the solve
    reports DIVERGED once every sample that did not converge has diverged."""
    scale = torch.tensor([[3.0], [0.5]])  # sample 0 runs away, sample 1 converges to 2

    def solve(max_iter):
        return eq.solve(
            lambda z: scale * z + 1.0,
            torch.zeros(2, 1),
            "picard",
            tol=1e-6,
            stop_mode="abs",
            max_iter=max_iter,
            on_failure="ignore",
        )

    sol = solve(200)
    assert sol.converged.tolist() == [False, True]
    assert sol.status == eq.Status.DIVERGED
    assert abs(float(sol.z[1]) - 2.0) <= 2e-6 and float(sol.z[0]) == 0.0  # each one's best
    assert sol.nfe < 30  # stopped as soon as sample 1 converged
    capped = solve(12)
    assert capped.status == eq.Status.MAX_ITER and capped.nfe == 12  # sample 1 still running


def test_a_sample_that_overflows_does_not_stop_the_others():
    """Sample 0 overflows to inf and then NaN; sample 1 still converges, and the non-finite
    values of a diverged sample are no error."""
    scale = torch.tensor([[4.0], [0.9]])  # float32 overflow after 64 steps, convergence after 132
    sol = eq.solve(
        lambda z: scale * z + 1.0,
        torch.zeros(2, 1),
        "picard",
        tol=1e-6,
        stop_mode="abs",
        max_iter=400,
        patience=None,
        on_failure="ignore",
    )
    assert not torch.isfinite(sol.abs_trace[:, 0]).all()  # sample 0 did overflow
    assert sol.converged.tolist() == [False, True] and sol.status == eq.Status.DIVERGED
    assert abs(float(sol.z[1]) - 10.0) <= 1e-4 and float(sol.z[0]) == 0.0


def test_message_is_readable():
    sol = eq.solve(torch.cos, torch.zeros(3, 1), "anderson", tol=1e-6, stop_mode="abs")
    assert "anderson converged: 3/3 samples below abs tol 1.0e-06" in sol.message
    assert "evaluations" in repr(sol)


def test_solve_keeps_the_callers_grad_mode():
    w = torch.tensor(0.5, requires_grad=True)
    sol = eq.solve(lambda z: w * z + 1.0, torch.zeros(1, 1), "picard", tol=1e-8, max_iter=100)
    assert sol.z.requires_grad  # traced through the loop: usable as an unrolled reference
    with torch.no_grad():
        sol = eq.solve(lambda z: w * z + 1.0, torch.zeros(1, 1), "picard", tol=1e-8, max_iter=100)
    assert not sol.z.requires_grad


def test_an_image_of_exact_zeros_is_no_non_finite_value():
    """relu(-z - 1) is 0 at every z >= 0: the relative residual ||z|| / ||f(z)|| is infinite
    there, which must not pass for a non-finite output (the fixed point is 0)."""
    z0 = torch.full((2, 3), 100.0)  # ||z|| / tiny overflows float32
    sol = eq.solve(lambda z: torch.relu(-z - 1), z0, "picard", tol=1e-6, max_iter=5)
    assert sol.status == eq.Status.CONVERGED and torch.equal(sol.z, torch.zeros(2, 3))
    assert torch.isinf(sol.rel_trace[0]).all()


def test_the_divergence_guard_can_be_turned_off_as_scipy_has_none():
    # a contraction whose residual first grows some 1e5-fold (a non-normal linear map), then
    # converges: the guard gives up on it, math.inf lets it through
    a = torch.tensor([[0.5, 1e5], [0.0, 0.5]], dtype=torch.float64)
    b = torch.tensor([0.0, 1.0], dtype=torch.float64)

    def f(z):
        return z @ a.T + b

    z0 = torch.zeros(2, 2, dtype=torch.float64)
    options = dict(tol=1e-9, stop_mode="rel", max_iter=300, patience=None)
    guarded = eq.solve(f, z0, "picard", on_failure="ignore", **options)
    assert guarded.status == eq.Status.DIVERGED
    free = eq.solve(f, z0, "picard", divergence_ratio=math.inf, **options)
    assert free.status == eq.Status.CONVERGED
    torch.testing.assert_close(free.z[0], torch.tensor([4e5, 2.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="math.inf"):
        eq.solve(f, z0, divergence_ratio=1.0)


def test_a_residual_norm_that_overflows_at_finite_values_is_divergence_not_an_error():
    # finite float32 values whose norm overflows (1e20 squared): no error of f, a runaway
    def f(z):
        return torch.full_like(z, 1e20) + 0 * z

    sol = eq.solve(f, torch.zeros(3, 64), "picard", max_iter=20, on_failure="ignore")
    assert sol.status == eq.Status.DIVERGED
    with pytest.raises(eq.NonFiniteError, match="holds NaN"):  # a real NaN still is one
        eq.solve(lambda z: z + torch.nan, torch.zeros(3, 64), "picard")
