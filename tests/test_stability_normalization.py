"""Weight / spectral normalization: computed once per DEQ forward, no manual reset between steps."""

import pytest
import torch
from torch import nn

import equilibria as eq
from equilibria.cells import ConvCell


class MLPCell(nn.Module):
    """f(z, x) = tanh(W2 relu(W1 z) + x) with small weights (a contraction)."""

    def __init__(self, d=6, hidden=10):
        super().__init__()
        self.w1 = nn.Linear(d, hidden)
        self.w2 = nn.Linear(hidden, d)
        with torch.no_grad():
            self.w2.weight.mul_(0.5)

    def forward(self, z, x):
        return torch.tanh(self.w2(torch.relu(self.w1(z))) + x)


NORMS = pytest.mark.parametrize(
    "normalize", [eq.weight_norm, eq.spectral_norm], ids=["weight", "spectral"]
)


def count_evaluations(cell):
    """Attach a counter to every parametrization in `cell`; returns the list it appends to."""
    calls = []
    for layer in cell.modules():
        if hasattr(layer, "parametrizations"):
            for name, plist in layer.parametrizations.items():
                plist[0].register_forward_hook(lambda *args, n=name: calls.append(n))
    return calls


def test_weight_norm_keeps_values_and_reparametrizes_every_layer():
    cell = MLPCell()
    before = cell.w1.weight.detach().clone()
    assert eq.weight_norm(cell) is cell
    torch.testing.assert_close(cell.w1.weight, before)
    names = {n for n, _ in cell.named_parameters()}
    assert "w1.parametrizations.weight.original0" in names  # g
    assert "w2.parametrizations.weight.original1" in names  # v
    g = cell.w1.parametrizations.weight.original0
    with torch.no_grad():
        g.mul_(2.0)
    torch.testing.assert_close(cell.w1.weight, 2 * before)


@NORMS
@pytest.mark.parametrize("backward", ["implicit", "phantom", "unrolled"])
def test_normalized_weights_are_computed_once_per_forward(normalize, backward):
    cell = normalize(MLPCell())
    calls = count_evaluations(cell)
    deq = eq.DEQ(cell, "picard", tol=1e-6, max_iter=40, backward=backward)
    x = torch.randn(4, 6)
    z = deq(x)
    assert deq.stats.forward_nfe > 5  # many cell applications ...
    assert sorted(calls) == ["weight", "weight"]  # ... but each weight computed once
    z.sum().backward()
    assert len(calls) == 2  # the backward reuses the forward's weights
    grads = [p.grad for p in cell.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_without_the_deq_layer_each_call_recomputes():
    """The control: outside a DEQ forward, PyTorch evaluates the parametrization per access."""
    cell = eq.weight_norm(MLPCell())
    calls = count_evaluations(cell)
    x = torch.randn(4, 6)
    eq.solve(lambda z: cell(z, x), torch.zeros(4, 6), "picard", tol=1e-6)
    assert len(calls) > 10


def test_gradients_reach_g_and_v_and_match_an_unnormalized_twin():
    """Implicit gradients through the cached weights equal the chain rule through w(g, v)."""
    torch.manual_seed(1)
    plain = MLPCell().double()
    normed = eq.weight_norm(MLPCell().double())
    normed.load_state_dict(
        {
            "w1.bias": plain.w1.bias,
            "w2.bias": plain.w2.bias,
            "w1.parametrizations.weight.original0": plain.w1.weight.norm(dim=1, keepdim=True),
            "w1.parametrizations.weight.original1": plain.w1.weight,
            "w2.parametrizations.weight.original0": plain.w2.weight.norm(dim=1, keepdim=True),
            "w2.parametrizations.weight.original1": plain.w2.weight,
        }
    )
    x = torch.randn(3, 6, dtype=torch.float64)
    settings = dict(
        tol=1e-12, stop_mode="abs", max_iter=200, backward=eq.Implicit("anderson", tol=1e-12)
    )
    eq.DEQ(plain, **settings)(x).sin().sum().backward()
    eq.DEQ(normed, **settings)(x).sin().sum().backward()
    # dL/dv = g/||v|| (I - w_hat w_hat^T) dL/dw per row, with w_hat = v/||v||, g = ||v||
    gw = plain.w1.weight.grad
    v = normed.w1.parametrizations.weight.original1
    w_hat = v / v.norm(dim=1, keepdim=True)
    expected_v = gw - (gw * w_hat).sum(1, keepdim=True) * w_hat
    torch.testing.assert_close(v.grad, expected_v, atol=1e-9, rtol=1e-7)
    expected_g = (gw * w_hat).sum(1, keepdim=True)
    g = normed.w1.parametrizations.weight.original0
    torch.testing.assert_close(g.grad, expected_g, atol=1e-9, rtol=1e-7)


@NORMS
def test_two_training_steps_need_no_reset(normalize):
    cell = normalize(MLPCell())
    deq = eq.DEQ(cell, tol=1e-6, max_iter=60)
    optimizer = torch.optim.SGD(cell.parameters(), lr=0.5)
    x, target = torch.randn(8, 6), torch.randn(8, 6).tanh()
    losses, weights = [], []
    for _ in range(3):
        optimizer.zero_grad()
        z = deq(x)
        # z is the fixed point of the weights the current parameters give (eval mode: the
        # spectral norm's power iteration does not advance again)
        with torch.no_grad():
            cell.eval()
            weights.append(cell.w1.weight.clone())
            torch.testing.assert_close(z, cell(z, x), atol=1e-5, rtol=0)
            cell.train()
        loss = (z - target).pow(2).mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert not torch.equal(weights[0], weights[1])  # the step changed the normalized weight
    assert losses[2] < losses[0]


def test_spectral_norm_bounds_the_weight_and_advances_once_per_forward():
    cell = eq.spectral_norm(MLPCell(), n_power_iterations=1)
    deq = eq.DEQ(cell, "picard", tol=1e-6, max_iter=40)
    u = cell.w1.parametrizations.weight[0]._u
    states = [u.clone()]
    for _ in range(3):
        deq(torch.randn(2, 6))
        states.append(u.clone())
    assert all(not torch.equal(a, b) for a, b in zip(states[:-1], states[1:], strict=True))
    for _ in range(30):  # the power iteration settles; sigma_max of the used weight -> 1
        deq(torch.randn(2, 6))
    sigma = torch.linalg.matrix_norm(cell.w1.weight.detach(), ord=2)
    assert abs(float(sigma) - 1.0) < 1e-3


def test_normalization_errors_are_clear():
    with pytest.raises(ValueError, match=r"found no layer with a tensor 'weight'.*types=\("):
        eq.weight_norm(nn.ReLU())
    cell = eq.weight_norm(MLPCell())
    with pytest.raises(ValueError, match=r"w1.weight is already parametrized by _WeightNorm"):
        eq.spectral_norm(cell)
    with pytest.raises(TypeError, match="needs an nn.Module"):
        eq.weight_norm(torch.ones(3))
    with pytest.raises(ValueError, match="n_power_iterations must be an integer >= 1"):
        eq.spectral_norm(MLPCell(), n_power_iterations=0)


def test_conv_layers_inside_a_conv_cell():
    cell = eq.weight_norm(ConvCell(4))
    calls = count_evaluations(cell)
    deq = eq.DEQ(cell, tol=1e-4, max_iter=30)
    z = deq(torch.randn(2, 4, 5, 5))
    z.mean().backward()
    assert len(calls) == 2 and deq.stats.forward_nfe > 2
