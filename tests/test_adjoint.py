"""The implicit backward's default adjoint solve: exact when it converges, and a bounded,
sign-keeping filter of the spectrum when it is cut at its cap (the normal regime of training)."""

import pytest
import torch
from torch import nn

import equilibria as eq
from equilibria.backward import ADJOINT_DAMPING
from equilibria.cells import TanhCell


class SymmetricLinearCell(nn.Module):
    """f(z, x) = z Q diag(s) Q^T + x: its Jacobian has the known eigenvalues s."""

    def __init__(self, eigenvalues: list[float]) -> None:
        super().__init__()
        n = len(eigenvalues)
        torch.manual_seed(0)
        q, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64))
        self.q = q
        s = torch.tensor(eigenvalues, dtype=torch.float64)
        self.weight = nn.Parameter(q @ torch.diag(s) @ q.T)

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return z @ self.weight.T + x


def adjoint_of(cell, backward, upstream, forward_cap=2):
    """The adjoint solution y of one backward pass, with the forward solve cut short too."""
    deq = eq.DEQ(cell, "anderson", tol=1e-12, max_iter=forward_cap, backward=backward)
    deq.train()
    x = torch.zeros_like(upstream)
    (deq(x, on_failure="ignore") * upstream).sum().backward()
    return deq.stats.backward.z, deq.stats.backward.nfe


def filter_polynomial(s: torch.Tensor, steps: int, d: float, undamped: int = 0) -> torch.Tensor:
    """The multiplier of `undamped` plain steps then `steps - undamped` damped ones from y = g
    on an eigenvalue s: a partial Neumann sum, then q^n (m - 1 / (1 - s)) + 1 / (1 - s)."""
    start = sum(s**k for k in range(undamped + 1))
    q = 1 - d * (1 - s)
    n = steps - undamped
    return q**n * (start - 1 / (1 - s)) + 1 / (1 - s)


def test_cut_short_default_adjoint_is_the_damped_neumann_filter():
    # one slow mode (0.999: the exact adjoint amplifies it 1000x) among fast ones
    eigenvalues = torch.tensor([0.999, 0.5, 0.2, -0.3], dtype=torch.float64)
    cell = SymmetricLinearCell(eigenvalues.tolist())
    upstream = torch.ones(1, 4, dtype=torch.float64)
    cap = 20
    y, nfe = adjoint_of(cell, eq.Implicit(max_iter=cap), upstream)
    assert nfe == cap
    in_modes = (y @ cell.q) / (upstream @ cell.q)  # the multiplier on each eigenvector
    expected = filter_polynomial(eigenvalues, cap - 1, ADJOINT_DAMPING)
    torch.testing.assert_close(in_modes[0], expected)
    # bounded by 1 + d K on the slow mode, where the exact inverse gives 1 / (1 - 0.999) = 1000
    assert in_modes[0, 0] <= 1 + ADJOINT_DAMPING * cap


def test_cut_short_default_adjoint_keeps_the_sign_of_an_unstable_mode():
    # an eigenvalue past 1: the fixed point is unstable and the exact inverse flips the sign
    eigenvalues = [1.05, 0.6, 0.3]
    cell = SymmetricLinearCell(eigenvalues)
    upstream = torch.tensor([[1.0, 2.0, -1.0]], dtype=torch.float64)
    exact = torch.linalg.solve(
        torch.eye(3, dtype=torch.float64) - cell.weight.detach().T, upstream[0]
    )
    y, _ = adjoint_of(cell, eq.Implicit(max_iter=20), upstream)
    unstable = cell.q[:, 0]
    g_along, y_along, exact_along = (v.flatten() @ unstable for v in (upstream, y, exact))
    assert torch.sign(exact_along) == -torch.sign(g_along)  # the exact answer flips it
    assert torch.sign(y_along) == torch.sign(g_along)
    # the growth of 19 damped steps, not the exact inverse's 1 / (1 - 1.05) = -20
    expected = filter_polynomial(torch.tensor(1.05, dtype=torch.float64), 19, ADJOINT_DAMPING)
    torch.testing.assert_close(y_along / g_along, expected)


def test_default_adjoint_converges_to_the_exact_implicit_gradient():
    eigenvalues = [0.9, 0.5, -0.4, 0.1]
    cell = SymmetricLinearCell(eigenvalues)
    upstream = torch.tensor([[0.3, -1.0, 2.0, 0.5]], dtype=torch.float64)
    exact = torch.linalg.solve(
        torch.eye(4, dtype=torch.float64) - cell.weight.detach().T, upstream[0]
    )
    backward = eq.Implicit(tol=1e-13, stop_mode="abs", max_iter=3000)
    y, _ = adjoint_of(cell, backward, upstream, forward_cap=200)
    torch.testing.assert_close(y[0], exact, atol=1e-11, rtol=0)


def test_default_adjoint_solver_and_its_options():
    assert eq.Implicit().settings_for(eq.SolveSettings(eq.Anderson())).solver == eq.Picard(
        damping=ADJOINT_DAMPING
    )
    assert eq.Implicit(damping=0.25).solver == eq.Picard(damping=0.25)
    assert eq.Implicit(switch_ratio=0.8).solver == eq.Picard(
        damping=ADJOINT_DAMPING, switch_ratio=0.8
    )
    assert eq.Implicit("anderson").solver == eq.Anderson()
    with pytest.raises(TypeError, match="damping"):
        eq.Implicit(m=6)  # hyperparameters without a name belong to the default solver


def test_default_adjoint_passes_gradcheck_when_it_converges():
    torch.manual_seed(3)
    cell = TanhCell(5, contraction=0.7).double()
    backward = eq.Implicit(tol=1e-13, stop_mode="abs", max_iter=3000)
    deq = eq.DEQ(cell, "anderson", tol=1e-13, stop_mode="abs", max_iter=300, backward=backward)
    x = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(deq, (x,), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_no_adjoint_solve_runs_when_nothing_upstream_needs_a_gradient():
    sol = eq.solve(lambda z: 0.5 * torch.cos(z), torch.zeros(4, 1), backward="implicit")
    assert not sol.z.requires_grad  # as for any result of tensors that need no gradient
    assert sol.backward is None and sol.backward_nfe is None
    # a closure over a tensor that needs a gradient still gets its adjoint solve
    a = torch.tensor([0.5], requires_grad=True)
    sol = eq.solve(lambda z: a * torch.cos(z), torch.zeros(4, 1), backward="implicit")
    sol.z.sum().backward()
    assert sol.backward is not None and sol.backward_nfe > 0 and a.grad is not None
    # an input that needs a gradient, reached only through a non-leaf
    x = torch.randn(4, 1, requires_grad=True)
    encoded = 2 * x
    sol = eq.solve(lambda z: 0.5 * torch.cos(z) + encoded, torch.zeros(4, 1), backward="implicit")
    sol.z.sum().backward()
    assert sol.backward_nfe > 0 and x.grad is not None


def test_switching_adjoint_converges_fast_where_the_cell_contracts_well():
    # undamped while the residual shrinks fast: the damped iteration took four times as long
    torch.manual_seed(0)
    cell, x = TanhCell(64, contraction=0.5), torch.randn(32, 64)
    nfe = {}
    for name, backward in (
        ("switching", eq.Implicit(switch_ratio=0.8, max_iter=100)),
        ("damped", eq.Implicit(max_iter=100)),
    ):
        deq = eq.DEQ(cell, tol=1e-4, max_iter=100, backward=backward)
        z = deq(x)
        (z * torch.linspace(-1, 1, 64)).sum().backward()
        assert deq.stats.backward.all_converged
        nfe[name] = deq.stats.backward_nfe
    assert nfe["switching"] * 3 < nfe["damped"], nfe


def test_switching_picard_damps_a_sample_once_it_slows_down():
    # two independent samples: one contracts fast (0.2), one slowly (0.95)
    rates = torch.tensor([[0.2], [0.95]], dtype=torch.float64)
    sol = eq.solve(
        lambda z: rates * z + 1.0,
        torch.zeros(2, 1, dtype=torch.float64),
        eq.Picard(damping=0.3, switch_ratio=0.8),
        tol=1e-10,
        stop_mode="abs",
        max_iter=2000,
    )
    torch.testing.assert_close(sol.z, 1 / (1 - rates))
    # the fast sample converged at its undamped rate (0.2 per step: some 15 steps)
    converged_at = (sol.abs_trace <= 1e-10).float().argmax(dim=0)
    assert converged_at[0] <= 16
    # the slow one switched to damped steps: its residual then shrinks by 1 - 0.3 (1 - 0.95)
    late = sol.abs_trace[50:60, 1]
    torch.testing.assert_close(late[1:] / late[:-1], torch.full((9,), 0.985, dtype=late.dtype))
    with pytest.raises(ValueError, match="switch_ratio"):
        eq.Picard(switch_ratio=1.5)
