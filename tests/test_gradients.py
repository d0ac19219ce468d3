"""Gradients of the DEQ layer against exact references."""

import pytest
import torch
from torch import nn

import equilibria as eq
from equilibria.cells import TanhCell

# the splitting solvers need a monotone cell's splitting: tests/test_monotone.py
GENERAL = [name for name, cls in eq.SOLVERS.items() if not cls.needs_splitting]
TIGHT = dict(tol=1e-12, stop_mode="abs", max_iter=300)


def make_cell(features=6, contraction=0.8):
    torch.manual_seed(3)
    return TanhCell(features, contraction=contraction).double()


@pytest.mark.parametrize("solver", GENERAL)
def test_gradcheck_wrt_input_and_parameters(solver):
    cell = make_cell()
    deq = eq.DEQ(cell, solver, backward=eq.Implicit(solver, tol=1e-12), **TIGHT)
    x = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    params = (cell.linear.weight, cell.linear.bias, cell.inject.weight)

    def fn(x, w, b, u):
        return torch.func.functional_call(
            deq, {"cell.linear.weight": w, "cell.linear.bias": b, "cell.inject.weight": u}, (x,)
        )

    assert torch.autograd.gradcheck(fn, (x, *params), eps=1e-6, atol=1e-6, rtol=1e-5)


def dense_ift_gradient(cell, x, z_star, upstream):
    """dL/dx and dL/dW from the implicit function theorem with dense Jacobians."""
    z = z_star.detach()
    batch, d = z.shape
    grads_x, grads_w = [], []
    w = cell.linear.weight
    for b in range(batch):
        zb, xb = z[b : b + 1], x[b : b + 1].detach()
        jac_z = torch.autograd.functional.jacobian(lambda v, xb=xb: cell(v, xb), zb).reshape(d, d)
        jac_x = torch.autograd.functional.jacobian(lambda v, zb=zb: cell(zb, v), xb).reshape(d, -1)
        jac_w = torch.autograd.functional.jacobian(
            lambda m, zb=zb, xb=xb: torch.tanh(zb @ m.T + cell.linear.bias + cell.inject(xb)), w
        ).reshape(d, -1)
        adjoint = torch.linalg.solve((torch.eye(d, dtype=z.dtype) - jac_z).T, upstream[b])
        grads_x.append(adjoint @ jac_x)
        grads_w.append((adjoint @ jac_w).reshape(w.shape))
    return torch.stack(grads_x), sum(grads_w)


@pytest.mark.parametrize("solver", GENERAL)
def test_implicit_gradient_matches_dense_ift_and_unrolled_backprop(solver):
    cell = make_cell(contraction=0.9)
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(4, 6, dtype=torch.float64)

    def grads(backward, solver_name):
        x.grad = None
        cell.zero_grad()
        deq = eq.DEQ(cell, solver_name, backward=backward, patience=None, **TIGHT)
        z = deq(x)
        (z * upstream).sum().backward()
        return z.detach(), x.grad.clone(), cell.linear.weight.grad.clone()

    z, gx, gw = grads(eq.Implicit(solver, tol=1e-13, stop_mode="abs"), solver)
    ref_x, ref_w = dense_ift_gradient(cell, x, z, upstream)
    torch.testing.assert_close(gx, ref_x, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(gw, ref_w, atol=1e-9, rtol=1e-9)
    _, ux, uw = grads("unrolled", solver)
    torch.testing.assert_close(ux, ref_x, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(uw, ref_w, atol=1e-9, rtol=1e-9)


def test_tuple_state_gradients_match_unrolled():
    class TwoScale(nn.Module):
        def __init__(self):
            super().__init__()
            self.fine = nn.Linear(4, 4)
            self.coarse = nn.Linear(4, 2)
            self.up = nn.Linear(2, 4)
            with torch.no_grad():
                for layer in (self.fine, self.coarse, self.up):
                    layer.weight.mul_(0.4)

        def forward(self, z, x):
            fine, coarse = z
            new_fine = torch.tanh(self.fine(fine) + self.up(coarse.flatten(1)) + x)
            return new_fine, torch.tanh(self.coarse(new_fine)).unsqueeze(2) + 0.2 * coarse

        def init_state(self, x):
            return x.new_zeros(x.shape[0], 4), x.new_zeros(x.shape[0], 2, 1)

    torch.manual_seed(0)
    cell = TwoScale().double()
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    results = []
    for backward in (eq.Implicit("anderson", tol=1e-13), "unrolled"):
        x.grad = None
        cell.zero_grad()
        fine, coarse = eq.DEQ(cell, "anderson", backward=backward, **TIGHT)(x)
        (fine.sin().sum() + coarse.pow(2).sum()).backward()
        results.append([x.grad.clone()] + [p.grad.clone() for p in cell.parameters()])
    for implicit, unrolled in zip(*results, strict=True):
        torch.testing.assert_close(implicit, unrolled, atol=1e-9, rtol=1e-8)


def test_phantom_gradient_approaches_implicit_as_steps_grow():
    cell = make_cell(contraction=0.9)
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)

    def grad_of(backward):
        x.grad = None
        (eq.DEQ(cell, backward=backward, **TIGHT)(x) ** 2).sum().backward()
        return x.grad.clone()

    exact = grad_of(eq.Implicit("anderson", tol=1e-13))
    errors = [
        float((grad_of(eq.Phantom(steps=k, tau=0.6)) - exact).norm() / exact.norm())
        for k in (1, 4, 16, 64)
    ]
    assert all(a > b for a, b in zip(errors, errors[1:], strict=False)), errors
    assert errors[-1] < 1e-6
    # one-step: the gradient of one cell application at a constant z*, taken here by hand
    z_star = eq.solve(lambda z: cell(z, x), torch.zeros(4, 6, dtype=torch.float64), **TIGHT).z
    (by_hand,) = torch.autograd.grad((cell(z_star.detach(), x) ** 2).sum(), x)
    onestep = grad_of("onestep")
    torch.testing.assert_close(onestep, by_hand, rtol=1e-10, atol=1e-12)
    assert float((onestep - exact).norm() / exact.norm()) > 0.1  # a different gradient


def saved_bytes(max_iter, backward):
    """Bytes that autograd saves for backward during one DEQ forward."""
    torch.manual_seed(0)
    cell = TanhCell(32, contraction=0.99)
    deq = eq.DEQ(
        cell,
        "picard",
        tol=0.0,
        max_iter=max_iter,
        backward=backward,
        patience=None,
        on_failure="ignore",
    )
    x = torch.randn(8, 32)
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        deq(x).sum().backward()
    assert deq.stats.forward_nfe == max_iter
    return total


@pytest.mark.parametrize("backward", ["implicit", "phantom", "onestep"])
def test_memory_saved_for_backward_does_not_grow_with_iterations(backward):
    assert saved_bytes(5, backward) == saved_bytes(60, backward)


def test_unrolled_memory_grows_with_iterations():
    assert saved_bytes(30, "unrolled") > 4 * saved_bytes(5, "unrolled")


def test_backward_statistics_and_own_settings():
    cell = make_cell(contraction=0.9)
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    deq = eq.DEQ(
        cell, "anderson", tol=1e-4, backward=eq.Implicit("broyden", tol=1e-10, stop_mode="abs")
    )
    z = deq(x)
    assert deq.stats.backward_nfe is None and deq.stats.backward is None
    z.sum().backward()
    assert deq.stats.backward.solver == "broyden"
    assert deq.stats.backward.tol == 1e-10 and deq.stats.backward.stop_mode == "abs"
    assert deq.stats.backward_nfe == deq.stats.backward.nfe > 0
    assert deq.stats.backward.converged.all()


def test_parameter_gradients_flow_through_ordinary_autograd():
    """Module hooks on the cell see the backward pass (no custom Function hides them)."""
    cell = make_cell()
    seen = []
    cell.linear.register_full_backward_hook(lambda m, gin, gout: seen.append(gout[0].shape))
    x = torch.randn(2, 6, dtype=torch.float64)
    z = eq.DEQ(cell, tol=1e-8, max_iter=200)(x)
    z.sum().backward()
    assert seen, "the cell's backward hook never fired"
    _, exact = dense_ift_gradient(cell, x, z, torch.ones_like(z))
    torch.testing.assert_close(cell.linear.weight.grad, exact, rtol=1e-6, atol=1e-8)
