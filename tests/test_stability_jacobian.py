"""Jacobian penalty (Hutchinson) and spectral radius (power iteration) against dense references."""

import pytest
import torch
from torch import nn

import equilibria as eq
from equilibria.cells import TanhCell
from equilibria.stability import hutchinson_frobenius


def dense_jacobians(cell, z, x):
    """(batch, d, d): the Jacobian of cell(., x_b) at z_b for every sample b."""
    return torch.stack(
        [
            torch.autograd.functional.jacobian(lambda v, b=b: cell(v[None], x[b : b + 1])[0], z[b])
            for b in range(z.shape[0])
        ]
    )


def small_cell(d=4, contraction=0.9):
    torch.manual_seed(4)
    return TanhCell(d, contraction=contraction).double()


def test_each_probe_is_exactly_eps_transpose_j_squared():
    cell = small_cell()
    x = torch.randn(3, 4, dtype=torch.float64)
    z = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    fz = cell(z, x)
    torch.manual_seed(11)
    estimate = hutchinson_frobenius(fz, z, probes=1)
    torch.manual_seed(11)
    eps = torch.randn_like(fz)
    jac = dense_jacobians(cell, z.detach(), x)
    expected = torch.einsum("bi,bij->bj", eps, jac).pow(2).sum(1) / 4
    torch.testing.assert_close(estimate, expected)


def test_estimate_is_unbiased_for_the_dense_frobenius_norm():
    cell = small_cell()
    x = torch.randn(1, 4, dtype=torch.float64)
    z0 = torch.randn(1, 4, dtype=torch.float64)
    exact = dense_jacobians(cell, z0, x).pow(2).sum() / 4
    z = z0.expand(20000, -1).clone().requires_grad_()  # 20000 independent probes of one J
    estimate = hutchinson_frobenius(cell(z, x.expand(20000, -1)), z).mean()
    assert abs(estimate.item() / exact.item() - 1) < 0.03


def test_tuple_states_sum_over_all_parts():
    a = torch.randn(5, 5, dtype=torch.float64)

    def f(parts):
        u, v = parts
        joint = torch.cat([u, v.flatten(1)], 1) @ a.T
        return joint[:, :2], joint[:, 2:].reshape(-1, 3, 1)

    u = torch.randn(8000, 2, dtype=torch.float64, requires_grad=True)
    v = torch.randn(8000, 3, 1, dtype=torch.float64, requires_grad=True)
    estimate = hutchinson_frobenius(f((u, v)), (u, v)).mean()
    assert abs(float(estimate / (a.pow(2).sum() / 5)) - 1) < 0.05


def deq_with_penalty(backward="implicit", gamma=2.0, p=1.0, probes=1):
    cell = small_cell()
    penalty = eq.JacobianPenalty(gamma=gamma, p=p, probes=probes)
    return cell, eq.DEQ(cell, tol=1e-10, max_iter=100, backward=backward, jacobian_penalty=penalty)


@pytest.mark.parametrize("backward", list(eq.BACKWARDS))
def test_deq_penalty_matches_dense_frobenius_norm_at_the_fixed_point(backward):
    cell, deq = deq_with_penalty(backward)
    x = torch.randn(1, 4, dtype=torch.float64).expand(4000, -1)
    z = deq(x)
    exact = dense_jacobians(cell, z[:1].detach(), x).pow(2).sum() / 4
    estimate = deq.stats.jacobian_frobenius_sq
    assert abs(float(estimate / exact) - 1) < 0.05
    torch.testing.assert_close(deq.stats.jacobian_loss.detach(), 2.0 * estimate)


def test_penalty_gradient_matches_the_dense_gradient_at_the_fixed_point():
    cell, deq = deq_with_penalty(gamma=1.0)
    x = torch.randn(1, 4, dtype=torch.float64).expand(8000, -1)
    z = deq(x)
    deq.stats.jacobian_loss.backward()
    estimated = cell.linear.weight.grad.clone()
    cell.zero_grad()
    z_star = z[:1].detach()
    jac = torch.autograd.functional.jacobian(
        lambda v: cell(v, x[:1]), z_star, create_graph=True
    ).reshape(4, 4)
    (jac.pow(2).sum() / 4).backward()
    exact = cell.linear.weight.grad
    assert float((estimated - exact).norm() / exact.norm()) < 0.1


def test_penalty_reuses_the_output_application():
    """No extra cell evaluation: the penalty sits on the graph the backward strategy built."""
    for penalty in (None, eq.JacobianPenalty(gamma=1.0)):
        calls = []
        cell = small_cell()
        cell.register_forward_hook(lambda *a, calls=calls: calls.append(1))
        deq = eq.DEQ(cell, "picard", tol=1e-8, max_iter=100, jacobian_penalty=penalty)
        deq(torch.randn(3, 4, dtype=torch.float64))
        assert len(calls) == deq.stats.forward_nfe + 1


def test_penalty_is_applied_with_probability_p_and_only_in_training():
    _, deq = deq_with_penalty(p=0.4)
    x = torch.randn(2, 4, dtype=torch.float64)
    applied = 0
    for _ in range(300):
        deq(x)
        applied += deq.stats.jacobian_frobenius_sq is not None
        if deq.stats.jacobian_frobenius_sq is None:
            assert float(deq.stats.jacobian_loss) == 0.0
    assert 0.3 < applied / 300 < 0.5
    _, deq = deq_with_penalty(p=1.0)
    with torch.no_grad():
        deq(x)
    assert deq.stats.jacobian_frobenius_sq is None
    deq.eval()
    deq(x)
    assert deq.stats.jacobian_frobenius_sq is None and float(deq.stats.jacobian_loss) == 0


def test_more_probes_lower_the_variance():
    def spread(probes):
        _, deq = deq_with_penalty(probes=probes)
        values = []
        for seed in range(100):
            torch.manual_seed(seed)
            deq(torch.ones(1, 4, dtype=torch.float64))
            values.append(float(deq.stats.jacobian_frobenius_sq))
        return torch.tensor(values).std()

    assert spread(16) < 0.5 * spread(1)


def test_regularized_training_ends_with_a_smaller_jacobian():
    def train(gamma):
        torch.manual_seed(0)
        cell = TanhCell(8, contraction=0.9)
        head = nn.Linear(8, 1)
        penalty = eq.JacobianPenalty(gamma)
        deq = eq.DEQ(cell, tol=1e-4, max_iter=30, jacobian_penalty=penalty, on_failure="ignore")
        params = list(cell.parameters()) + list(head.parameters())
        optimizer = torch.optim.Adam(params, lr=1e-2)
        x = torch.randn(32, 8)
        y = (x[:, :1] * 3).sin()
        for _ in range(25):
            optimizer.zero_grad()
            z = deq(x)
            loss = (head(z) - y).pow(2).mean() + deq.stats.jacobian_loss
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            z = deq(x)
        jac = dense_jacobians(cell, z[:16], x)
        return float(jac.pow(2).sum((1, 2)).mean() / 8)

    unregularized, regularized = train(0.0), train(2.0)
    assert regularized < 0.5 * unregularized


def test_jacobian_loss_helper_sums_every_deq_in_a_model():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = eq.DEQ(small_cell(), jacobian_penalty=eq.JacobianPenalty(1.0))
            self.b = eq.DEQ(small_cell(), jacobian_penalty=eq.JacobianPenalty(3.0))

        def forward(self, x):
            return self.b(self.a(x))

    model = Two()
    model(torch.randn(3, 4, dtype=torch.float64))
    total = eq.jacobian_loss(model)
    torch.testing.assert_close(total, model.a.stats.jacobian_loss + model.b.stats.jacobian_loss)
    with pytest.raises(ValueError, match="no eq.DEQ with statistics.*run the model's forward"):
        eq.jacobian_loss(nn.Linear(2, 2))


def test_penalty_settings_are_checked():
    with pytest.raises(ValueError, match="JacobianPenalty gamma must be a number >= 0"):
        eq.JacobianPenalty(gamma=-1.0)
    for p in (-0.1, 1.2):
        with pytest.raises(ValueError, match=r"JacobianPenalty p must lie in \[0, 1\]"):
            eq.JacobianPenalty(p=p)
    with pytest.raises(ValueError, match="JacobianPenalty probes must be an integer >= 1"):
        eq.JacobianPenalty(probes=0)
    with pytest.raises(TypeError, match=r"jacobian_penalty must be None or an eq.JacobianPenalty"):
        eq.DEQ(small_cell(), jacobian_penalty={"gamma": 1.0})
    with pytest.raises(ValueError, match="needs fz computed from z with autograd on"):
        hutchinson_frobenius(torch.ones(2, 3), torch.ones(2, 3))


# ---------------------------------------------------------------- spectral radius


@pytest.mark.parametrize("seed", range(4))
def test_spectral_radius_matches_eigvals_on_small_jacobians(seed):
    torch.manual_seed(seed)
    cell = TanhCell(6, contraction=0.95).double()
    x = torch.randn(5, 6, dtype=torch.float64)
    z = eq.DEQ(cell, tol=1e-10)(x).detach()
    exact = torch.linalg.eigvals(dense_jacobians(cell, z, x)).abs().amax(-1)
    rho = eq.spectral_radius(lambda v: cell(v, x), z, iters=300, tol=1e-12)
    torch.testing.assert_close(rho, exact, rtol=1e-6, atol=1e-9)


def test_spectral_radius_finds_a_complex_dominant_pair():
    angle = torch.tensor(1.0, dtype=torch.float64)
    rotation = torch.stack(
        [torch.stack([angle.cos(), -angle.sin()]), torch.stack([angle.sin(), angle.cos()])]
    )
    a = torch.zeros(4, 4, dtype=torch.float64)
    a[:2, :2] = 0.9 * rotation
    a[2:, 2:] = torch.tensor([[0.5, 0.2], [0.0, -0.3]], dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64))
    a = q @ a @ q.T
    rho = eq.spectral_radius(lambda v: v @ a.T, torch.zeros(3, 4, dtype=torch.float64), tol=1e-12)
    torch.testing.assert_close(rho, torch.full((3,), 0.9, dtype=torch.float64))
    plain = eq.spectral_radius(
        lambda v: v @ a.T, torch.zeros(3, 4, dtype=torch.float64), block=1, iters=200
    )
    assert (plain - 0.9).abs().max() > 1e-3  # a single vector cannot settle on a rotation


def test_spectral_radius_of_tuple_states_and_constant_maps():
    a = torch.diag(torch.tensor([0.3, -0.7, 0.1], dtype=torch.float64))

    def f(parts):
        joint = torch.cat([parts[0], parts[1]], 1) @ a.T
        return joint[:, :1], joint[:, 1:]

    z = (torch.randn(2, 1, dtype=torch.float64), torch.randn(2, 2, dtype=torch.float64))
    torch.testing.assert_close(eq.spectral_radius(f, z, tol=1e-12), torch.full((2,), 0.7).double())
    zero = eq.spectral_radius(lambda v: torch.ones_like(v), torch.randn(3, 4))
    assert torch.equal(zero, torch.zeros(3))


def test_spectral_radius_settings_are_checked():
    with pytest.raises(ValueError, match="spectral_radius iters must be an integer >= 1"):
        eq.spectral_radius(torch.tanh, torch.ones(2, 2), iters=0)
    with pytest.raises(ValueError, match="spectral_radius tol must be a number >= 0"):
        eq.spectral_radius(torch.tanh, torch.ones(2, 2), tol=-1.0)
    with pytest.raises(eq.StateMismatchError, match="output of f"):
        eq.spectral_radius(lambda v: v[:, :1], torch.ones(2, 2))
