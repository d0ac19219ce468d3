"""Monotone cells (Winston & Kolter, 2020): the parametrization, the splitting structure, the
splitting solvers and exact implicit gradients."""

import math

import pytest
import torch
from problems import dense_ift_gradients

import equilibria as eq
from equilibria.monotone import MonotoneConvCell, MonotoneLinearCell
from equilibria.monotone.parametrization import circular_conv, circular_conv_adjoint
from equilibria.solvers import ForwardBackward, PeacemanRachford

F64 = torch.float64
SHAPE = (3, 4, 5)  # conv cells: channels, height, width (small enough for dense matrices)


def dense_cell(m=0.05, seed=0, scale=1.0):
    torch.manual_seed(seed)
    cell = MonotoneLinearCell(10, 4, m=m).double()
    with torch.no_grad():  # larger weights: W far from the identity
        cell.a.mul_(scale)
        cell.b.mul_(scale)
    return cell, torch.randn(3, 4, dtype=F64)


def conv_cell(m=0.05, seed=0, scale=1.0):
    torch.manual_seed(seed)
    cell = MonotoneConvCell(SHAPE[0], 2, m=m).double()
    with torch.no_grad():
        cell.a.mul_(scale)
        cell.b.mul_(scale)
    return cell, torch.randn(2, 2, *SHAPE[1:], dtype=F64)


CELLS = {"dense": dense_cell, "conv": conv_cell}


def matrix_of(linear, n):
    """The dense matrix of a linear map of (batch, n) rows, from the basis vectors."""
    return linear(torch.eye(n, dtype=F64)).T


def weight_matrix(cell, x, transpose=False):
    operator = cell.splitting(x).operator
    return matrix_of(lambda v: operator.apply(v, transpose), operator.features)


def flat_map(cell, x):
    shape = cell.init_state(x).shape
    return lambda z: cell(z.reshape(shape), x).reshape(shape[0], -1)


# --- the parametrization ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", CELLS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_symmetric_part_of_identity_minus_w_is_at_least_m(kind, seed):
    m = 0.1
    cell, x = CELLS[kind](m=m, seed=seed, scale=3.0)
    w = weight_matrix(cell, x)
    eye = torch.eye(w.shape[0], dtype=F64)
    symmetric = eye - (w + w.T) / 2
    assert torch.linalg.eigvalsh(symmetric).min() >= m - 1e-10
    # W^T is the transpose; the skew part is there (B contributes), so W is not symmetric
    torch.testing.assert_close(weight_matrix(cell, x, transpose=True), w.T)
    assert (w - w.T).abs().max() > 1e-3


def test_dense_weight_is_the_formula_and_the_cell_applies_it():
    cell, x = dense_cell(m=0.2, scale=2.0)
    a, b = cell.a.detach(), cell.b.detach()
    eye = torch.eye(10, dtype=F64)
    w = 0.8 * eye - a.T @ a + b - b.T
    torch.testing.assert_close(cell.weight(), w)
    torch.testing.assert_close(weight_matrix(cell, x), w)
    z = torch.randn(3, 10, dtype=F64)
    torch.testing.assert_close(cell(z, x), torch.relu(z @ w.T + cell.inject(x)))


def test_conv_weight_is_the_formula_with_exact_adjoint_convolutions():
    cell, x = conv_cell(m=0.2, scale=2.0)
    n = SHAPE[0] * SHAPE[1] * SHAPE[2]

    def conv_matrix(op, weight):
        return matrix_of(lambda v: op(v.reshape(-1, *SHAPE), weight).reshape(v.shape[0], -1), n)

    a, b = cell.a.detach(), cell.b.detach()
    a_mat, b_mat = conv_matrix(circular_conv, a), conv_matrix(circular_conv, b)
    # conv transposes are the exact adjoints
    torch.testing.assert_close(conv_matrix(circular_conv_adjoint, a), a_mat.T)
    torch.testing.assert_close(conv_matrix(circular_conv_adjoint, b), b_mat.T)
    eye = torch.eye(n, dtype=F64)
    w = 0.8 * eye - a_mat.T @ a_mat + b_mat - b_mat.T
    torch.testing.assert_close(weight_matrix(cell, x), w)
    z = torch.randn(2, n, dtype=F64)
    bias = cell.inject(x).reshape(2, -1)
    torch.testing.assert_close(flat_map(cell, x)(z), torch.relu(z @ w.T + bias))


def test_circular_convolution_commutes_with_shifts_of_the_torus():
    """Circular padding: shifting the image shifts the result (zero padding would not)."""
    torch.manual_seed(4)
    u, weight = torch.randn(2, 3, 5, 6, dtype=F64), torch.randn(4, 3, 3, 3, dtype=F64)
    for op in (circular_conv, circular_conv_adjoint):
        w = weight if op is circular_conv else weight.transpose(0, 1)
        shifted = op(torch.roll(u, (2, -3), dims=(2, 3)), w)
        torch.testing.assert_close(shifted, torch.roll(op(u, w), (2, -3), dims=(2, 3)))


def test_margin_and_kernel_size_are_checked():
    with pytest.raises(ValueError, match="margin m"):
        MonotoneLinearCell(4, m=0.0)
    with pytest.raises(ValueError, match="margin m"):
        MonotoneConvCell(4, m=-1.0)
    with pytest.raises(ValueError, match="odd"):
        MonotoneConvCell(4, kernel_size=2)


# --- the splitting ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", CELLS)
@pytest.mark.parametrize("transpose", [False, True], ids=["W", "W^T"])
def test_resolvent_inverts_identity_plus_alpha_identity_minus_w(kind, transpose):
    cell, x = CELLS[kind](scale=2.0)
    operator = cell.splitting(x).operator
    w = weight_matrix(cell, x, transpose)
    eye = torch.eye(w.shape[0], dtype=F64)
    v = torch.randn(3, w.shape[0], dtype=F64)
    for alpha in (0.3, 2.0):
        expected = torch.linalg.solve(eye + alpha * (eye - w), v.T).T
        torch.testing.assert_close(operator.resolvent(v, alpha, transpose), expected)


@pytest.mark.parametrize("kind", CELLS)
def test_lipschitz_bound_is_the_norm_of_identity_minus_w(kind):
    cell, x = CELLS[kind](scale=2.0)
    splitting = cell.splitting(x)
    w = weight_matrix(cell, x)
    eye = torch.eye(w.shape[0], dtype=F64)
    expected = float(torch.linalg.matrix_norm(eye - w.detach(), ord=2))
    assert splitting.lipschitz == pytest.approx(expected, rel=1e-10)
    assert splitting.m == cell.m and splitting.lipschitz >= splitting.m
    # ||I - W^T|| = ||I - W||: the adjoint takes the number instead of computing it again
    calls = []
    norm = splitting.operator.norm
    splitting.operator.norm = lambda: calls.append(1) or norm()
    z = torch.rand(x.shape[0], splitting.features, dtype=F64)
    adjoint = splitting.adjoint(z, torch.randn_like(z))
    assert adjoint.lipschitz == splitting.lipschitz and not calls


def test_equilibrium_map_carries_the_splitting_and_is_the_cell():
    cell, x = dense_cell()
    fmap = cell.equilibrium_map(x)
    z = torch.randn(3, 10, dtype=F64)
    torch.testing.assert_close(fmap(z), cell(z, x))
    splitting = fmap.splitting
    torch.testing.assert_close(splitting.bias, cell.inject(x))
    torch.testing.assert_close(splitting.prox(splitting.linear(z) + splitting.bias, 1.0), fmap(z))


# --- the splitting solvers -------------------------------------------------------------------

FORWARD = {"peaceman_rachford": 0.05, "forward_backward": 0.5}  # the margin each is tested at


@pytest.mark.parametrize("kind", CELLS)
@pytest.mark.parametrize("solver", FORWARD)
def test_splitting_solvers_reach_the_one_equilibrium_from_any_start(kind, solver):
    cell, x = CELLS[kind](m=FORWARD[solver])
    fmap = cell.equilibrium_map(x)
    z0 = cell.init_state(x)
    tight = dict(tol=1e-11, stop_mode="abs", max_iter=3000, patience=None)
    reference = eq.solve(fmap, z0, "anderson", **tight)
    assert reference.status == eq.Status.CONVERGED
    for seed in range(3):
        start = torch.randn(z0.shape, generator=torch.Generator().manual_seed(seed), dtype=F64)
        sol = eq.solve(fmap, 3 * start, solver, **tight)
        assert sol.status == eq.Status.CONVERGED, sol.message
        assert sol.solver == solver
        torch.testing.assert_close(sol.z, reference.z, atol=1e-9, rtol=0)
        torch.testing.assert_close(cell(sol.z, x), sol.z, atol=1e-10, rtol=0)


def test_peaceman_rachford_converges_where_plain_iteration_does_not():
    cell, x = dense_cell(scale=2.0)
    fmap = cell.equilibrium_map(x)
    options = dict(tol=1e-6, max_iter=400, on_failure="ignore")
    plain = eq.solve(fmap, cell.init_state(x), "picard", **options)
    split = eq.solve(fmap, cell.init_state(x), "peaceman_rachford", **options)
    assert plain.status != eq.Status.CONVERGED
    assert split.status == eq.Status.CONVERGED


@pytest.mark.parametrize("kind", CELLS)
def test_peaceman_rachford_default_step_follows_the_operator(kind):
    cell, x = CELLS[kind](m=1.0, scale=4.0)  # L = ||I - W|| near 20: far from alpha = 1's
    fmap = cell.equilibrium_map(x)
    splitting = fmap.splitting
    lipschitz, m = splitting.lipschitz, splitting.m
    symmetric = 1 / math.sqrt(m * lipschitz)
    rule = math.sqrt(symmetric * 2 / (lipschitz + math.sqrt(m * lipschitz)))
    assert PeacemanRachford().step_size(splitting) == pytest.approx(rule)
    assert PeacemanRachford(alpha=0.3).step_size(splitting) == 0.3
    # on an operator scaled as a trained one the rule needs far fewer evaluations than the
    # fixed alpha = 1, than 1 / L and than a step half as large, and at most a quarter more
    # than the symmetric optimum 1 / sqrt(m L) or a step twice as large (same tolerance)
    options = dict(tol=1e-6, max_iter=4000, patience=None)
    nfe = {
        alpha: eq.solve(fmap, cell.init_state(x), PeacemanRachford(alpha=alpha), **options).nfe
        for alpha in (None, rule / 2, 2 * rule, 1.0, 1 / lipschitz, symmetric)
    }
    assert nfe[None] < min(nfe[rule / 2], nfe[1.0], nfe[1 / lipschitz]), nfe
    assert nfe[None] <= 1.25 * min(nfe[symmetric], nfe[2 * rule]), nfe


@pytest.mark.parametrize("kind", CELLS)
def test_peaceman_rachford_default_step_beats_the_symmetric_rule_on_skewed_operators(kind):
    # a small margin: the skew part dominates, and 1 / sqrt(m L) is several times too long
    cell, x = CELLS[kind](m=0.05, scale=4.0)
    fmap = cell.equilibrium_map(x)
    splitting = fmap.splitting
    symmetric = 1 / math.sqrt(splitting.m * splitting.lipschitz)
    options = dict(tol=1e-6, max_iter=4000, patience=None)
    default = eq.solve(fmap, cell.init_state(x), "peaceman_rachford", **options).nfe
    rule = eq.solve(fmap, cell.init_state(x), PeacemanRachford(alpha=symmetric), **options).nfe
    assert default < 0.6 * rule, (default, rule)


def test_forward_backward_refuses_a_step_size_above_its_bound():
    cell, x = dense_cell(m=0.5)
    fmap = cell.equilibrium_map(x)
    splitting = fmap.splitting
    bound = 2 * splitting.m / splitting.lipschitz**2
    with pytest.raises(ValueError, match="2 m / L"):
        eq.solve(fmap, cell.init_state(x), ForwardBackward(alpha=1.01 * bound))
    sol = eq.solve(
        fmap,
        cell.init_state(x),
        ForwardBackward(alpha=0.99 * bound),
        max_iter=5,
        on_failure="ignore",
    )
    assert sol.nfe == 5
    assert ForwardBackward().step_size(splitting) <= bound
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="alpha"):
            ForwardBackward(alpha=bad)
        with pytest.raises(ValueError, match="alpha"):
            PeacemanRachford(alpha=bad)


@pytest.mark.parametrize("solver", FORWARD)
def test_splitting_solvers_refuse_maps_without_a_splitting(solver):
    with pytest.raises(eq.UnsupportedError, match="MonotoneLinearCell"):
        eq.solve(torch.cos, torch.zeros(2, 3), solver)


@pytest.mark.parametrize("kind", CELLS)
@pytest.mark.parametrize("solver", FORWARD)
@pytest.mark.parametrize("max_iter", [7, 8])
def test_every_application_of_w_or_the_resolvent_counts(kind, solver, max_iter):
    cell, x = CELLS[kind]()
    fmap = cell.equilibrium_map(x)
    operator = fmap.splitting.operator
    calls = {"f": 0, "operator": 0}

    def counting(name, fn):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)

        return wrapped

    fmap.fn = counting("f", fmap.fn)
    operator.apply = counting("operator", operator.apply)
    operator.resolvent = counting("operator", operator.resolvent)
    sol = eq.solve(
        fmap,
        cell.init_state(x),
        solver,
        tol=0.0,
        max_iter=max_iter,
        patience=None,
        on_failure="ignore",
    )
    assert sol.nfe == calls["f"] + calls["operator"] == max_iter
    assert calls["operator"] == 3  # one per step; with one evaluation left, a plain step


# --- gradients -------------------------------------------------------------------------------

ADJOINTS = ["gmres", "anderson", "peaceman_rachford"]


def reference_gradients(cell, x, z_star, upstream):
    batch = x.shape[0]
    return dense_ift_gradients(
        flat_map(cell, x),
        z_star.reshape(batch, -1),
        upstream.reshape(batch, -1),
        (cell.a, cell.b, cell.inject.weight),
    )


def gradients(cell):
    return [p.grad.clone() for p in (cell.a, cell.b, cell.inject.weight)]


@pytest.mark.parametrize("kind", CELLS)
@pytest.mark.parametrize("adjoint", [*ADJOINTS, "forward_backward"])
def test_implicit_gradients_through_solve_are_exact(kind, adjoint):
    m = 0.5 if adjoint == "forward_backward" else 0.05  # the backward step is slow at small m
    cell, x = CELLS[kind](m=m, scale=1.5)
    fmap = cell.equilibrium_map(x)
    z0 = cell.init_state(x)
    upstream = torch.randn(z0.shape, dtype=F64)
    backward = eq.Implicit(adjoint, tol=1e-11, stop_mode="abs", max_iter=3000)
    sol = eq.solve(
        fmap,
        z0,
        "peaceman_rachford",
        tol=1e-12,
        stop_mode="abs",
        max_iter=1000,
        patience=None,
        backward=backward,
    )
    (sol.z * upstream).sum().backward()
    assert sol.backward.status == eq.Status.CONVERGED, sol.backward.message
    references = reference_gradients(cell, x, sol.z, upstream)
    for grad, reference in zip(gradients(cell), references, strict=True):
        torch.testing.assert_close(grad, reference, atol=1e-8, rtol=1e-7)


def test_plain_adjoint_iteration_fails_where_the_splitting_does_not():
    """J = D W has spectral radius above 1 here: the damped iteration cannot converge."""
    cell, x = dense_cell(scale=1.5)
    fmap = cell.equilibrium_map(x)
    z0 = cell.init_state(x)
    for adjoint, converges in (("picard", False), ("peaceman_rachford", True)):
        backward = eq.Implicit(adjoint, tol=1e-8, max_iter=300)
        options = dict(tol=1e-10, max_iter=500, on_failure="ignore")  # the adjoint's too
        sol = eq.solve(fmap, z0, "peaceman_rachford", backward=backward, **options)
        assert sol.status == eq.Status.CONVERGED
        sol.z.sum().backward()
        assert (sol.backward.status == eq.Status.CONVERGED) == converges


@pytest.mark.parametrize("kind", CELLS)
@pytest.mark.parametrize("solver", ["anderson", "peaceman_rachford"])
@pytest.mark.parametrize("adjoint", ADJOINTS)
def test_implicit_gradients_through_deq_are_exact(kind, solver, adjoint):
    """eq.DEQ lends the cell's splitting to its maps: the splitting solvers run forward and
    adjoint (a DEQ that stopped attaching it fails here, with UnsupportedError)."""
    cell, x = CELLS[kind](scale=1.5)
    backward = eq.Implicit(adjoint, tol=1e-11, stop_mode="abs", max_iter=3000)
    deq = eq.DEQ(
        cell, solver, backward=backward, tol=1e-12, stop_mode="abs", max_iter=1000, patience=None
    )
    z = deq(x)
    upstream = torch.randn(z.shape, dtype=F64)
    (z * upstream).sum().backward()
    references = reference_gradients(cell, x, z, upstream)
    for grad, reference in zip(gradients(cell), references, strict=True):
        torch.testing.assert_close(grad, reference, atol=1e-8, rtol=1e-7)
