"""What solves do with unusual inputs: one clear line for each mistake a user can make, and
the expected answer for edge cases (an empty batch, an expanded upstream gradient)."""

import pytest
import torch

import equilibria as eq
from equilibria.monotone import MonotoneConvCell, MonotoneLinearCell

F64 = torch.float64


def tanh_map(features=6, batch=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    w = (0.3 * torch.randn(features, features, generator=gen, dtype=F64)).requires_grad_()
    x = torch.randn(batch, features, generator=gen, dtype=F64)
    return (lambda z: torch.tanh(z @ w.T + x)), w, x


# --- the implicit backward with Newton's forward-mode products -------------------------------


def test_newton_adjoint_takes_the_expanded_gradient_of_a_sum():
    """`.sum()` sends an expanded tensor of ones (stride 0) into the adjoint solve; Newton's
    forward-mode products must still run on it, and give the gradient GMRES gives."""
    f, w, _ = tanh_map()
    grads = []
    for adjoint in ("newton", "gmres"):
        w.grad = None
        backward = eq.Implicit(adjoint, tol=1e-12, stop_mode="abs", max_iter=100)
        sol = eq.solve(f, torch.zeros(3, 6, dtype=F64), "newton", tol=1e-12, backward=backward)
        sol.z.sum().backward()
        assert sol.backward.status == eq.Status.CONVERGED, sol.backward.message
        grads.append(w.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], atol=1e-10, rtol=0)


def test_forward_mode_product_at_an_expanded_point():
    from equilibria.solvers.base import forward_jvp

    z = torch.ones(1, 4, dtype=F64).expand(3, 4)
    v = torch.ones(1, 4, dtype=F64).expand(3, 4)
    jv = forward_jvp(torch.sin, z, v)
    torch.testing.assert_close(jv, torch.cos(z))


# --- solver options ---------------------------------------------------------------------------


def test_options_beside_a_solver_object_say_where_they_belong():
    with pytest.raises(TypeError) as caught:
        eq.solve(torch.cos, torch.zeros(2, 3), eq.Newton(), k=3)
    message = str(caught.value)
    assert "\n" not in message
    assert "eq.Newton(k=3)" in message and 'solver="newton", k=3' in message
    # a keyword that is no option of the solver at all stays an unknown keyword
    with pytest.raises(TypeError, match="unknown keyword 'colour'"):
        eq.solve(torch.cos, torch.zeros(2, 3), eq.Newton(), colour=3)


# --- an empty batch ---------------------------------------------------------------------------


@pytest.mark.parametrize("solver", ["anderson", "newton", "picard"])
def test_an_empty_batch_is_solved_without_evaluations(solver):
    calls = []

    def f(z):
        calls.append(1)
        return torch.cos(z)

    sol = eq.solve(f, torch.zeros(0, 3), solver)
    assert sol.status == eq.Status.CONVERGED and sol.nfe == 0 and not calls
    assert sol.z.shape == (0, 3) and sol.converged.shape == (0,)
    assert sol.trace.shape == (1, 0)
    parts = eq.solve(lambda z: (z[0] / 2, z[1] / 2), (torch.zeros(0, 3), torch.zeros(0, 2, 2)))
    assert [p.shape for p in parts.z] == [(0, 3), (0, 2, 2)]


def test_an_empty_batch_has_a_zero_implicit_gradient():
    f, w, _ = tanh_map(batch=0)
    sol = eq.solve(f, torch.zeros(0, 6, dtype=F64), backward="implicit")
    sol.z.sum().backward()
    assert torch.equal(w.grad, torch.zeros_like(w))


# --- monotone cells ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: MonotoneLinearCell(-1), "MonotoneLinearCell features must be an integer >= 1"),
        (lambda: MonotoneLinearCell(2.5), "MonotoneLinearCell features must be an integer >= 1"),
        (lambda: MonotoneLinearCell(0), "MonotoneLinearCell features must be an integer >= 1"),
        (
            lambda: MonotoneLinearCell(4, input_features=0),
            "MonotoneLinearCell input_features must be an integer >= 1, got 0",
        ),
        (lambda: MonotoneConvCell(-2), "MonotoneConvCell channels must be an integer >= 1"),
        (lambda: MonotoneConvCell(1.5), "MonotoneConvCell channels must be an integer >= 1"),
        (lambda: MonotoneConvCell(0), "MonotoneConvCell channels must be an integer >= 1"),
        (
            lambda: MonotoneConvCell(3, input_channels=0),
            "MonotoneConvCell input_channels must be an integer >= 1, got 0",
        ),
    ],
)
def test_monotone_cells_refuse_bad_sizes_in_one_line(make, message):
    with pytest.raises(ValueError, match=message) as caught:
        make()
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("solver", ["peaceman_rachford", "forward_backward", "anderson"])
def test_a_wrong_sized_start_names_both_sizes(solver):
    torch.manual_seed(0)
    cell = MonotoneLinearCell(8, 4).double()
    fmap = cell.equilibrium_map(torch.randn(2, 4, dtype=F64))
    with pytest.raises(ValueError, match=r"8 features per sample.*shape \(2, 5\)"):
        eq.solve(fmap, torch.zeros(2, 5, dtype=F64), solver)
    with pytest.raises(ValueError, match=r"batch of 2 inputs.*batch size 3"):
        eq.solve(fmap, torch.zeros(3, 8, dtype=F64), solver)


def test_a_wrong_shaped_image_start_names_both_shapes():
    torch.manual_seed(0)
    cell = MonotoneConvCell(3, 2).double()
    fmap = cell.equilibrium_map(torch.randn(2, 2, 4, 5, dtype=F64))
    with pytest.raises(ValueError, match=r"\(batch, 3, 4, 5\).*\(2, 3, 5, 4\)"):
        eq.solve(fmap, torch.zeros(2, 3, 5, 4, dtype=F64), "peaceman_rachford")
    sol = eq.solve(fmap, cell.init_state(torch.zeros(2, 2, 4, 5)).double(), "peaceman_rachford")
    assert sol.z.shape == (2, 3, 4, 5)
