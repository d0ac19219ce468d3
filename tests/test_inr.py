"""The DEQ implicit representation: contraction, fixed-point reuse, gradients, explicit baseline."""

import math

import pytest
import torch

from equilibria.models import DEQINR, FourierFeatures, FourierMLP
from equilibria.models.inr import count_parameters

COORDS = torch.rand(40, 2, generator=torch.Generator().manual_seed(1)) * 2 - 1


def tiny(**options):
    settings = dict(tol=1e-6, max_iter=300, stop_mode="abs", seed=3)
    settings.update(options)
    return DEQINR(8, 4, **settings)


def test_fourier_features_are_sines_and_cosines_of_fixed_frequencies():
    encoding = FourierFeatures(2, 5, scale=3.0, seed=7)
    again = FourierFeatures(2, 5, scale=3.0, seed=7)
    assert torch.equal(encoding.frequencies, again.frequencies)
    assert not any(True for _ in encoding.parameters())
    features = encoding(COORDS)
    angles = 2 * math.pi * COORDS @ encoding.frequencies.T
    assert features.shape == (40, 10)
    torch.testing.assert_close(features[:, :5], torch.sin(angles))
    torch.testing.assert_close(features[:, 5:], torch.cos(angles))


def test_cell_is_a_contraction_with_its_spectral_norm():
    model = tiny(contraction=0.8)
    cell = model.deq.cell
    u = model.injection(COORDS).detach()
    a, b = torch.randn(40, 8), torch.randn(40, 8)
    with torch.no_grad():
        gap = (cell(a, u) - cell(b, u)).norm(dim=1) / (a - b).norm(dim=1)
        weight = cell.linear.weight
    assert float(torch.linalg.matrix_norm(weight, ord=2)) == pytest.approx(1.0, abs=1e-3)
    assert float(gap.max()) <= 0.8 + 1e-4


def test_the_output_is_the_fixed_point_decoded():
    model = tiny()
    with torch.no_grad():
        z = model.equilibrium(COORDS)
        u = model.injection(COORDS)
        residual = (model.deq.cell(z, u) - z).abs().max()
        rgb = model(COORDS)
    assert float(residual) < 1e-6
    torch.testing.assert_close(rgb, model.head(z))
    assert model.stats.converged.all()


def test_reuse_reaches_the_cold_fixed_point_in_fewer_evaluations():
    model = tiny(tol=1e-10).double()
    model.eval()  # the spectral norm's power iteration must not move between the two solves
    coords = COORDS.double()
    with torch.no_grad():
        previous = model.equilibrium(coords)
        for parameter in model.parameters():  # a small training step's worth of change
            parameter.add_(1e-3 * torch.randn_like(parameter))
        cold = model.equilibrium(coords)
        cold_nfe = model.stats.forward_nfe
        warm = model.equilibrium(coords, z0=previous)
        warm_nfe = model.stats.forward_nfe
    assert model.stats.converged.all()
    # both within tol / (1 - contraction) of the one fixed point
    torch.testing.assert_close(warm, cold, atol=1e-9, rtol=0)
    assert warm_nfe < cold_nfe
    # at a training tolerance most of the solve is saved
    loose = dict(tol=1e-4)
    with torch.no_grad():
        model.equilibrium(coords, **loose)
        cold_nfe = model.stats.forward_nfe
        model.equilibrium(coords, z0=previous, **loose)
        warm_nfe = model.stats.forward_nfe
    assert warm_nfe * 2 <= cold_nfe, (warm_nfe, cold_nfe)


def test_z0_of_the_wrong_shape_is_a_clear_error():
    model = tiny()
    with pytest.raises(ValueError, match=r"z0 must be a \(40, 8\) state"):
        model.equilibrium(COORDS, z0=torch.zeros(39, 8))
    with pytest.raises(ValueError, match=r"coords must be a \(points, 2\) tensor"):
        model(torch.zeros(10, 3))


def test_contraction_must_be_below_one():
    with pytest.raises(ValueError, match="contraction must be < 1"):
        DEQINR(8, 4, contraction=1.0)


def unrolled_reference(model, coords, iterations=400):
    """The same network with the fixed point reached by plain backpropagated iteration."""
    u = model.injection(coords)
    z = torch.zeros_like(u)
    cell = model.deq.cell
    for _ in range(iterations):
        z = cell(z, u)
    return model.head(z)


def test_implicit_gradients_match_backpropagation_through_the_iteration_in_float64():
    torch.set_default_dtype(torch.float64)
    try:
        model = tiny(backward="implicit", contraction=0.7, tol=1e-13)
        coords = COORDS[:12].double()
    finally:
        torch.set_default_dtype(torch.float32)
    model.double().eval()  # eval: the normalized weight is the same in every call
    weights = torch.randn(12, 3, dtype=torch.float64)

    def gradients(output):
        model.zero_grad()
        (output * weights).sum().backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    implicit = gradients(model(coords))
    reference = gradients(unrolled_reference(model, coords))
    assert implicit.keys() == reference.keys() and len(implicit) >= 5
    for name in implicit:
        torch.testing.assert_close(implicit[name], reference[name], rtol=1e-7, atol=1e-9)


def test_implicit_gradient_of_the_coordinates_passes_gradcheck():
    torch.set_default_dtype(torch.float64)
    try:
        model = tiny(backward="implicit", contraction=0.7, tol=1e-13).double().eval()
        coords = COORDS[:5].double().clone().requires_grad_()
    finally:
        torch.set_default_dtype(torch.float32)
    assert torch.autograd.gradcheck(lambda p: model(p), (coords,), eps=1e-6, atol=1e-6)


def test_explicit_baseline_matches_the_parameter_count():
    deq = DEQINR(64, 32)
    explicit = FourierMLP.matching(count_parameters(deq), 32, depth=3)
    assert abs(count_parameters(explicit) - count_parameters(deq)) / count_parameters(deq) < 0.02
    assert count_parameters(explicit) == FourierMLP.parameters_for(explicit.head.in_features, 32, 3)
    assert explicit(COORDS).shape == (40, 3)
