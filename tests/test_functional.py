"""Gradients through the functional API: `eq.solve(f, z0, backward=...)`."""

import pytest
import torch
from problems import dense_ift_gradients
from torch import nn

import equilibria as eq
from equilibria.cells import TanhCell

TIGHT = dict(tol=1e-13, stop_mode="abs", max_iter=300, patience=None)
EXACT = eq.Implicit("anderson", tol=1e-13, stop_mode="abs", max_iter=300)


def tanh_closure(seed=0, batch=3, features=5):
    """z = tanh(z W^T + x U^T + b): W, U, b and x are plain float64 tensors that need grads."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(features, features, generator=gen, dtype=torch.float64)
    w = (0.8 * w / torch.linalg.matrix_norm(w, ord=2)).requires_grad_()
    u = torch.randn(features, features, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(features, generator=gen, dtype=torch.float64, requires_grad=True)
    x = torch.randn(batch, features, generator=gen, dtype=torch.float64, requires_grad=True)

    def f(z):
        return torch.tanh(z @ w.T + x @ u.T + b)

    return f, (w, u, b, x)


def test_implicit_gradients_of_a_closure_over_plain_tensors_match_dense_ift():
    f, inputs = tanh_closure()
    z0 = torch.zeros(3, 5, dtype=torch.float64)
    upstream = torch.randn(3, 5, dtype=torch.float64)
    sol = eq.solve(f, z0, backward=EXACT, **TIGHT)
    grads = torch.autograd.grad((sol.z * upstream).sum(), inputs)
    reference = dense_ift_gradients(f, sol.z, upstream, inputs)
    for got, want in zip(grads, reference, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)
    assert sol.backward is not None and sol.backward.all_converged
    assert sol.backward_nfe == sol.backward.nfe > 1


def test_implicit_gradients_reach_module_parameters():
    torch.manual_seed(1)
    layer = nn.Linear(6, 6).double()
    with torch.no_grad():
        layer.weight.mul_(0.7 / torch.linalg.matrix_norm(layer.weight, ord=2))
    x = torch.randn(4, 6, dtype=torch.float64)

    def f(z):
        return torch.tanh(layer(z) + x)

    sol = eq.solve(f, torch.zeros_like(x), backward=EXACT, **TIGHT)
    upstream = torch.randn_like(x)
    (sol.z * upstream).sum().backward()
    params = (layer.weight, layer.bias)
    reference = dense_ift_gradients(f, sol.z, upstream, params)
    for p, want in zip(params, reference, strict=True):
        torch.testing.assert_close(p.grad, want, rtol=1e-9, atol=1e-10)


def test_tuple_states_get_implicit_gradients():
    f, (w, u, b, x) = tanh_closure(seed=2, features=4)
    v = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)

    def pair(state):  # two coupled parts of different widths
        fine, coarse = state
        return f(fine + coarse @ v), torch.tanh(0.5 * fine[:, :2] + 0.1 * coarse)

    def flat(z):
        fine, coarse = pair((z[:, :4], z[:, 4:]))
        return torch.cat([fine, coarse], dim=1)

    z0 = (torch.zeros(3, 4, dtype=torch.float64), torch.zeros(3, 2, dtype=torch.float64))
    sol = eq.solve(pair, z0, backward=EXACT, **TIGHT)
    assert isinstance(sol.z, tuple) and [p.shape for p in sol.z] == [(3, 4), (3, 2)]
    upstream = torch.randn(3, 6, dtype=torch.float64)
    inputs = (w, v, x)
    grads = torch.autograd.grad((torch.cat(sol.z, dim=1) * upstream).sum(), inputs)
    reference = dense_ift_gradients(flat, torch.cat(sol.z, dim=1), upstream, inputs)
    for got, want in zip(grads, reference, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


def manual_phantom(f, z_star, steps, tau):
    z = z_star.detach()
    for _ in range(steps):
        z = z + tau * (f(z) - z)
    return z


@pytest.mark.parametrize(
    "backward",
    [
        "implicit",
        eq.Implicit("broyden", tol=1e-12),
        eq.Phantom(steps=3, tau=0.5),
        "onestep",
        "unrolled",
    ],
    ids=str,
)
def test_every_backward_keeps_the_values_and_gives_its_own_gradient(backward):
    f, inputs = tanh_closure(seed=3)
    z0 = torch.zeros(3, 5, dtype=torch.float64)
    settings = dict(tol=1e-10, max_iter=100, patience=None)
    with torch.no_grad():
        plain = eq.solve(f, z0, **settings)
    sol = eq.solve(f, z0, backward=backward, **settings)
    assert torch.equal(sol.z.detach(), plain.z)  # the strategy changes gradients, not values
    got = torch.autograd.grad(sol.z.sum(), inputs)
    strategy = eq.make_backward(backward)
    upstream = torch.ones(3, 5, dtype=torch.float64)
    if isinstance(strategy, eq.Implicit):
        want = dense_ift_gradients(f, plain.z, upstream, inputs)
        tolerance = dict(rtol=1e-6, atol=1e-7)
    elif isinstance(strategy, eq.Phantom):
        want = torch.autograd.grad(manual_phantom(f, plain.z, 3, 0.5).sum(), inputs)
        tolerance = dict(rtol=1e-12, atol=1e-12)
    elif isinstance(strategy, eq.OneStep):
        want = torch.autograd.grad(f(plain.z.detach()).sum(), inputs)
        tolerance = dict(rtol=1e-12, atol=1e-12)
    else:  # unrolled: backpropagation through the same iterations without a strategy
        traced = eq.solve(f, z0, **settings)
        want = torch.autograd.grad(f(traced.z).sum(), inputs)
        tolerance = dict(rtol=1e-12, atol=1e-12)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, **tolerance)
    if strategy.name == "implicit":
        assert sol.backward_nfe == sol.backward.nfe > 0
    else:  # no adjoint solve: 0 evaluations, or None when autograd traced the solve itself
        assert sol.backward is None
        assert sol.backward_nfe == (None if strategy.name == "unrolled" else 0)


def test_gradcheck_through_an_implicit_solve():
    gen = torch.Generator().manual_seed(4)
    w0 = torch.randn(4, 4, generator=gen, dtype=torch.float64)
    w0 = 0.6 * w0 / torch.linalg.matrix_norm(w0, ord=2)
    x0 = torch.randn(2, 4, generator=gen, dtype=torch.float64)

    def fixed_point(w, x):
        sol = eq.solve(
            lambda z: torch.tanh(z @ w.T + x), torch.zeros_like(x), backward=EXACT, **TIGHT
        )
        return sol.z

    inputs = (w0.requires_grad_(), x0.requires_grad_())
    assert torch.autograd.gradcheck(fixed_point, inputs, eps=1e-6, atol=1e-7, rtol=1e-6)


def test_layer_and_functional_api_share_one_mechanism():
    torch.manual_seed(5)
    cell = TanhCell(5, contraction=0.8).double()
    x = torch.randn(3, 5, dtype=torch.float64)
    deq = eq.DEQ(cell, backward=EXACT, **TIGHT)
    deq(x).sum().backward()
    from_layer = [p.grad.clone() for p in cell.parameters()]
    cell.zero_grad()
    sol = eq.solve(lambda z: cell(z, x), torch.zeros_like(x), backward=EXACT, **TIGHT)
    sol.z.sum().backward()
    for p, want in zip(cell.parameters(), from_layer, strict=True):
        torch.testing.assert_close(p.grad, want, rtol=1e-9, atol=1e-11)
    assert deq.stats.backward_nfe == sol.backward_nfe


def test_without_a_backward_the_solve_is_traced_by_autograd_as_before():
    f, inputs = tanh_closure(seed=6)
    sol = eq.solve(f, torch.zeros(3, 5, dtype=torch.float64), tol=1e-10, max_iter=100)
    assert sol.z.requires_grad and sol.backward_nfe is None
    with torch.no_grad():
        sol = eq.solve(f, torch.zeros(3, 5, dtype=torch.float64), backward="implicit")
    assert not sol.z.requires_grad


def test_create_graph_through_an_implicit_backward_fails_with_one_clear_line():
    f, (w, u, b, x) = tanh_closure(seed=7)
    sol = eq.solve(f, torch.zeros(3, 5, dtype=torch.float64), backward="implicit", **TIGHT)
    with pytest.raises(eq.UnsupportedError, match=r"create_graph=True .*eq\.Unrolled\(\)"):
        torch.autograd.grad(sol.z.sum(), x, create_graph=True)


def test_second_derivatives_through_the_unrolled_backward_match_a_float64_reference():
    # z = a cos z: dz/da = cos z / (1 + a sin z); its derivative in a by central differences
    a = torch.tensor([0.5], dtype=torch.float64, requires_grad=True)

    def first_derivative(a_value):
        with torch.no_grad():
            z = eq.solve(
                lambda z: a_value * torch.cos(z), torch.zeros(1, 1, dtype=torch.float64), **TIGHT
            ).z
        return torch.cos(z) / (1 + a_value * torch.sin(z))

    sol = eq.solve(
        lambda z: a * torch.cos(z),
        torch.zeros(1, 1, dtype=torch.float64),
        backward="unrolled",
        tol=1e-15,
        stop_mode="abs",
        max_iter=200,
        patience=None,
    )
    (dz_da,) = torch.autograd.grad(sol.z.sum(), a, create_graph=True)
    (d2z_da2,) = torch.autograd.grad(dz_da.sum(), a)
    h = 1e-5
    with torch.no_grad():
        exact = first_derivative(a.detach())
        reference = (first_derivative(a.detach() + h) - first_derivative(a.detach() - h)) / (2 * h)
    torch.testing.assert_close(dz_da.detach().reshape(1), exact.reshape(1), rtol=1e-10, atol=0)
    torch.testing.assert_close(d2z_da2.reshape(1), reference.reshape(1), rtol=1e-7, atol=0)


def test_torch_func_grad_works_with_traced_strategies_and_refuses_the_implicit_one():
    f_w = torch.randn(4, 4, dtype=torch.float64) * 0.2
    x = torch.randn(2, 4, dtype=torch.float64)

    def loss(x, backward):
        sol = eq.solve(
            lambda z: torch.tanh(z @ f_w.T + x), torch.zeros_like(x), backward=backward, **TIGHT
        )
        return sol.z.sum()

    for backward in ("onestep", eq.Phantom(steps=2), "unrolled"):
        ours = torch.func.grad(loss)(x, backward)
        plain = x.clone().requires_grad_()
        loss(plain, backward).backward()
        torch.testing.assert_close(ours, plain.grad, rtol=1e-12, atol=1e-12)
    with pytest.raises(eq.UnsupportedError, match="torch.func.grad.*loss.backward"):
        torch.func.grad(loss)(x, "implicit")


def test_vmap_over_a_solve_fails_with_a_clear_error():
    x = torch.randn(3, 1, 4)
    with pytest.raises(eq.UnsupportedError, match="vmap cannot run a fixed-point solve"):
        torch.func.vmap(lambda xi: eq.solve(lambda z: torch.tanh(z + xi), xi).z)(x)
    deq = eq.DEQ(TanhCell(4))
    with pytest.raises(eq.UnsupportedError, match="vmap"):
        torch.func.vmap(deq)(x)
