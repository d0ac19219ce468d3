"""The jointly trained initial guess of `eq.DEQ(cell, initializer=h)`."""

import pytest
import torch
from torch import nn

import equilibria as eq
from equilibria.cells import TanhCell
from equilibria.training.step import penalized


def layer(**options):
    torch.manual_seed(0)
    cell = TanhCell(8, input_features=4, contraction=0.9)
    return eq.DEQ(cell, tol=1e-6, max_iter=100, initializer=nn.Linear(4, 8), **options)


def test_the_fit_loss_trains_only_the_initializer_and_is_what_it_says():
    deq = layer(initializer_weight=0.5)
    x = torch.randn(16, 4)
    z = deq(x)
    loss = deq.stats.initializer_loss
    guess = deq.initializer(x)
    torch.testing.assert_close(loss, 0.5 * (guess - z.detach()).square().mean(), rtol=1e-4, atol=0)
    loss.backward()
    assert all(p.grad is not None for p in deq.initializer.parameters())
    assert all(p.grad is None for p in deq.cell.parameters())
    torch.testing.assert_close(deq.stats.auxiliary_loss, loss + deq.stats.jacobian_loss)
    torch.testing.assert_close(penalized(torch.zeros(()), deq.stats), loss.detach())


def test_joint_training_cuts_the_evaluations_to_the_tolerance():
    torch.manual_seed(0)
    cell = TanhCell(8, input_features=4, contraction=0.9)
    network = nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Linear(32, 8))
    deq = eq.DEQ(cell, "picard", tol=1e-4, max_iter=200, initializer=network)
    x = torch.randn(64, 4)
    with torch.no_grad():
        from_zeros = eq.solve(lambda z: cell(z, x), torch.zeros(64, 8), "picard", tol=1e-4)
    optimizer = torch.optim.Adam(deq.initializer.parameters(), lr=0.01)
    losses = []
    for _ in range(150):
        deq(x)
        optimizer.zero_grad()
        deq.stats.initializer_loss.backward()
        optimizer.step()
        losses.append(float(deq.stats.initializer_loss.detach()))
    assert losses[-1] < 0.05 * losses[0]
    deq.eval()
    with torch.no_grad():
        deq(x)  # eval calls start from the guess and add no loss
    assert deq.stats.initializer_loss is None
    start, start_from_zeros = deq.stats.forward.rel_trace[0], from_zeros.rel_trace[0]
    assert (start < 0.2 * start_from_zeros).all()  # every solve starts 5x nearer its answer
    assert deq.stats.forward_nfe < from_zeros.nfe


def test_the_gradient_of_the_model_does_not_depend_on_the_start():
    deq = layer(backward=eq.Implicit("anderson", tol=1e-10))
    x = torch.randn(8, 4)
    deq(x).sum().backward()
    with_guess = [p.grad.clone() for p in deq.cell.parameters()]
    deq.cell.zero_grad()
    deq(x, z0=torch.zeros(8, 8)).sum().backward()  # a given z0: no guess, no fit loss
    assert deq.stats.initializer_loss is None
    for p, g in zip(deq.cell.parameters(), with_guess, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-6)


def test_an_initializer_of_the_wrong_structure_is_named_clearly():
    torch.manual_seed(0)
    deq = eq.DEQ(TanhCell(8, input_features=4), initializer=nn.Linear(4, 6))
    with pytest.raises(eq.StateMismatchError, match="initializer's output.*state's structure"):
        deq(torch.randn(3, 4))
    with pytest.raises(TypeError, match="initializer must be None or an nn.Module"):
        eq.DEQ(TanhCell(8), initializer=lambda x: x)
    with pytest.raises(ValueError, match="initializer_weight must be > 0"):
        eq.DEQ(TanhCell(8), initializer=nn.Linear(8, 8), initializer_weight=0)


def test_the_models_and_the_config_build_a_joint_initializer():
    from equilibria.config import Config, ConfigError
    from equilibria.models import DEQTransformer, build_model
    from equilibria.models.initializers import MultiscaleInitializer, SequenceInitializer

    torch.manual_seed(0)
    model = build_model(Config().override(["deq.init=joint", "deq.init_weight=0.3"]), (1, 8, 8), 10)
    assert isinstance(model.deq.initializer, MultiscaleInitializer)
    assert model.deq.initializer_weight == 0.3
    model(torch.randn(2, 1, 8, 8))
    assert model.stats.initializer_loss is not None and model.stats.initializer_loss > 0
    assert build_model(Config(), (1, 8, 8), 10).deq.initializer is None
    lm = DEQTransformer(vocab=11, width=16, heads=2, init="joint")
    assert isinstance(lm.deq.initializer, SequenceInitializer)
    lm(torch.randint(11, (2, 5)))
    assert lm.stats.initializer_loss is not None
    with pytest.raises(ConfigError, match="deq.init"):
        Config().override(["deq.init=learned"])
    with pytest.raises(ValueError, match="init='learned' is not valid; choose one of zeros, joint"):
        DEQTransformer(vocab=11, width=16, heads=2, init="learned")


def test_the_multiscale_guess_has_the_shapes_and_signs_of_the_mdeq_state():
    from equilibria.models import MDEQ

    torch.manual_seed(0)
    model = MDEQ(1, 10, channels=(8, 8), groups=4, init="joint", tol=1e-4, max_iter=60)
    x = model.stem(torch.randn(4, 1, 8, 8))
    guess = model.deq.initializer(x)
    fused = model.deq.cell(model.deq(x), x)  # ends in GroupNorm: signed, like the guess
    assert [g.shape for g in guess] == [s.shape for s in fused]
    for g, s in zip(guess, fused, strict=True):
        assert (g < 0).any() and (s < 0).any()


def test_an_initializer_fitted_to_fixed_points_starts_solves_nearer_them():
    from types import SimpleNamespace

    from benchmarks.parts.initializer_fit import (
        fit,
        fixed_points,
        moved,
        nfe_from,
        relative_distance,
        relative_residual,
    )
    from equilibria.models.mdeq import MDEQ

    torch.manual_seed(0)
    model = MDEQ(1, 10, channels=(4, 4), groups=2, init="joint").eval()
    frozen = SimpleNamespace(deq=model.deq)
    patterns, weights = torch.randn(2, 1, 8, 8), torch.rand(48, 2, 1, 1, 1)
    images = (weights * patterns).sum(1)  # a two-parameter family, so a fit can cover it
    x = model.stem(images).detach()
    z = fixed_points(frozen, x)
    reached = relative_residual(frozen, z, x) < 1e-5  # an untrained cell: nearly every sample
    assert int(reached.sum()) >= 40
    x, z = x[reached], tuple(part[reached] for part in z)
    zeros = model.deq.cell.init_state(x)
    torch.testing.assert_close(relative_residual(frozen, zeros, x), torch.ones(len(x)))
    wide = fit(2, x, z, groups=2, epochs=100, seed=0)
    assert [c.out_channels for c in wide.levels[0] if isinstance(c, nn.Conv2d)] == [8, 4]
    with torch.no_grad():
        guess = wide(x)
    assert float(relative_residual(frozen, guess, x).median()) < 0.9  # zeros: 1
    assert nfe_from(frozen, z, x) <= 2 < nfe_from(frozen, zeros, x)
    # guesses placed at a set distance from the fixed points: that distance, fewer evaluations
    # the nearer they are
    for distance in (0.3, 0.01):
        placed = moved(z, distance, seed=0)
        torch.testing.assert_close(
            relative_distance(placed, z), torch.full((len(x),), distance), rtol=1e-4, atol=0.0
        )
    assert nfe_from(frozen, moved(z, 0.01, 0), x) < nfe_from(frozen, moved(z, 0.3, 0), x)
