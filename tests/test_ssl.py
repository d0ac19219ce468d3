"""Contrastive pre-training pieces: NT-Xent, views, backbones, fixed-point reuse, linear probe."""

import math

import pytest
import torch

from equilibria.config import Config
from equilibria.ssl import (
    ContrastiveModel,
    DEQBackbone,
    ExplicitBackbone,
    ProjectionHead,
    ViewAugment,
    build_contrastive_model,
    contrastive_correct,
    contrastive_step,
    fit_linear_probe,
    nt_xent,
)
from equilibria.ssl.backbone import count_parameters


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: these small models only lose time to threads on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------- loss


def loop_nt_xent(z1, z2, temperature):
    """NT-Xent written out term by term, as in the SimCLR paper."""
    z = [v / v.norm() for v in torch.cat([z1, z2])]
    n, total = z1.shape[0], 0.0
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        denominator = sum(
            math.exp(float(z[i] @ z[k]) / temperature) for k in range(2 * n) if k != i
        )
        total += -math.log(math.exp(float(z[i] @ z[positive]) / temperature) / denominator)
    return total / (2 * n)


@pytest.mark.parametrize("temperature", [0.1, 0.5, 2.0])
def test_nt_xent_matches_the_loop_over_pairs(temperature):
    generator = torch.Generator().manual_seed(3)
    z1 = torch.randn(5, 4, generator=generator, dtype=torch.float64)
    z2 = torch.randn(5, 4, generator=generator, dtype=torch.float64)
    loss = nt_xent(z1, z2, temperature)
    assert loss.dtype == torch.float64
    assert float(loss) == pytest.approx(loop_nt_xent(z1, z2, temperature), rel=1e-12)
    single = nt_xent(z1.float(), z2.float(), temperature)
    assert float(single) == pytest.approx(loop_nt_xent(z1, z2, temperature), rel=1e-5)


def test_nt_xent_gradient_matches_finite_differences():
    generator = torch.Generator().manual_seed(4)
    z1 = torch.randn(4, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(4, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(nt_xent(z1, z2, 0.5), z1)
    step = 1e-6
    for i, j in [(0, 0), (2, 1), (3, 2)]:
        plus, minus = z1.detach().clone(), z1.detach().clone()
        plus[i, j] += step
        minus[i, j] -= step
        numeric = (loop_nt_xent(plus, z2.detach(), 0.5) - loop_nt_xent(minus, z2.detach(), 0.5)) / (
            2 * step
        )
        assert float(grad[i, j]) == pytest.approx(numeric, rel=1e-6, abs=1e-9)


def test_identical_views_are_all_found_and_the_loss_falls_with_agreement():
    z = torch.eye(6)[:, :6] * 5
    assert contrastive_correct(z, z) == 12
    aligned = nt_xent(z, z + 0.01, 0.5)
    shuffled = nt_xent(z, z.roll(1, 0), 0.5)
    assert aligned < shuffled
    assert contrastive_correct(z, z.roll(1, 0)) == 0


def test_nt_xent_rejects_bad_input_clearly():
    with pytest.raises(ValueError, match="same shape"):
        nt_xent(torch.randn(4, 3), torch.randn(5, 3))
    with pytest.raises(ValueError, match="at least 2 samples"):
        nt_xent(torch.randn(1, 3), torch.randn(1, 3))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        nt_xent(torch.randn(4, 3), torch.randn(4, 3), 0.0)


# ---------------------------------------------------------------- views


def test_views_keep_shape_and_dtype_and_are_deterministic_under_a_seed():
    x = torch.randn(6, 2, 8, 8)
    augment = ViewAugment()
    first = augment(x, torch.Generator().manual_seed(1), fill=-0.5)
    again = augment(x, torch.Generator().manual_seed(1), fill=-0.5)
    other = augment(x, torch.Generator().manual_seed(2), fill=-0.5)
    assert first.shape == x.shape and first.dtype == x.dtype
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)
    double = augment(x.double(), torch.Generator().manual_seed(1))
    assert double.dtype == torch.float64


def test_views_without_any_augmentation_are_the_images():
    x = torch.randn(3, 1, 8, 8)
    none = ViewAugment(translate=0, rotate=0, zoom=0, contrast=0, erase=0, noise=0)
    assert torch.allclose(none(x, torch.Generator().manual_seed(0)), x, atol=1e-6)


def test_erasing_blanks_a_square_with_the_fill_value():
    x = torch.randn(4, 1, 9, 9)
    erase = ViewAugment(translate=0, rotate=0, zoom=0, contrast=0, erase=1.0, noise=0)
    view = erase(x, torch.Generator().manual_seed(0), fill=-7.0)
    blanked = view == -7.0
    assert blanked.flatten(1).sum(1).tolist() == [9, 9, 9, 9]  # a 3x3 square in each
    assert torch.allclose(view[~blanked], x[~blanked], atol=1e-6)


def test_views_reject_bad_settings_and_input():
    with pytest.raises(ValueError, match="zoom must be < 1"):
        ViewAugment(zoom=1.0)
    with pytest.raises(ValueError, match="erase must lie in"):
        ViewAugment(erase=1.5)
    with pytest.raises(ValueError, match="float images"):
        ViewAugment()(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), torch.Generator())


# ---------------------------------------------------------------- backbones and reuse


def test_both_backbones_give_features_of_the_same_size():
    x = torch.randn(3, 1, 8, 8)
    deq = DEQBackbone(1, channels=(8, 8), expansion=1, grid=2)
    explicit = ExplicitBackbone(1, channels=(8, 8), expansion=1, grid=2)
    assert deq(x).shape == explicit(x).shape == (3, deq.feature_dim) == (3, 64)
    assert deq.stats.forward_nfe > 0 and explicit.stats is None
    with pytest.raises(TypeError, match="runs no solver, so max_iter"):
        explicit(x, max_iter=3)


def test_the_config_picks_the_backbone_and_a_matching_explicit_one_exists():
    deq = build_contrastive_model(Config(), 1)
    resnet = build_contrastive_model(Config().override(["arch=resnet", "expansion=2"]), 1)
    assert deq.is_equilibrium and not resnet.is_equilibrium
    ratio = count_parameters(resnet.backbone) / count_parameters(deq.backbone)
    assert 0.97 < ratio < 1.03  # the benchmark's equal-parameter pair
    assert deq.projector[0].in_features == resnet.projector[0].in_features == 48


def reuse_setup():
    """A small backbone and two views of 4 images whose solves all converge at tol 1e-6."""
    torch.manual_seed(0)
    backbone = DEQBackbone(1, channels=(4, 4), expansion=1, tol=1e-6, max_iter=100).eval()
    x = torch.randn(4, 1, 8, 8)
    augment = ViewAugment()
    views = [augment(x, torch.Generator().manual_seed(seed)) for seed in (0, 1)]
    return backbone, views


def test_reusing_the_first_views_fixed_point_reaches_the_cold_solves_fixed_point():
    backbone, (first, second) = reuse_setup()
    with torch.no_grad():
        z1 = backbone.equilibrium(first)
        cold = backbone.equilibrium(second)
        assert bool(backbone.stats.converged.all())
        warm = backbone.equilibrium(second, z1)
        assert bool(backbone.stats.converged.all())
    assert not torch.allclose(z1[0], cold[0], atol=1e-2)  # the views' fixed points differ
    for a, b in zip(cold, warm, strict=True):
        assert torch.allclose(a, b, atol=1e-4)


def test_the_model_gives_the_same_projections_with_and_without_reuse():
    backbone, (first, second) = reuse_setup()
    model = ContrastiveModel(backbone, ProjectionHead(backbone.feature_dim, 8, 4)).eval()
    with torch.no_grad():
        warm = model(first, second)
        model.reuse = False
        cold = model(first, second)
    assert bool(warm.second_stats.converged.all()) and bool(cold.second_stats.converged.all())
    assert torch.allclose(warm.first, cold.first)
    assert torch.allclose(warm.second, cold.second, atol=1e-4)
    assert warm.first_stats is not warm.second_stats


@pytest.mark.parametrize("arch", ["mdeq", "resnet"])
def test_a_contrastive_step_updates_the_model_and_reports_both_views(arch):
    torch.manual_seed(0)
    config = Config().override(
        [f"arch={arch}", "channels=4,4", "expansion=1", "deq.backward=implicit"]
    )
    model = build_contrastive_model(config, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = [p.detach().clone() for p in model.parameters()]
    sums, second = contrastive_step(
        model, torch.randn(8, 1, 8, 8), ViewAugment(), torch.Generator(), optimizer
    )
    assert sums["samples"] == 8 and 0 <= sums["correct"] <= 8 and math.isfinite(sums["loss"])
    changed = [not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True)]
    assert sum(changed) > 0.8 * len(changed) and all(changed[-4:])  # the projector's last
    if arch == "mdeq":
        assert sums["forward_nfe"] > 0 and sums["backward_nfe"] > 0
        assert second["forward_nfe"] > 0 and second["samples"] == 8
    else:
        assert "forward_nfe" not in sums and second == {}


# ---------------------------------------------------------------- linear probe


def test_the_probe_separates_separable_features():
    generator = torch.Generator().manual_seed(0)
    centres = 6 * torch.randn(4, 10, generator=generator)
    labels = torch.arange(4).repeat_interleave(50)
    features = centres[labels] + torch.randn(200, 10, generator=generator)
    probe = fit_linear_probe(features[::2], labels[::2], 4)
    assert probe.accuracy(features[1::2], labels[1::2]) == 1.0
    shuffled = labels[torch.randperm(200, generator=generator)]
    chance = fit_linear_probe(features[::2], shuffled[::2], 4)
    assert chance.accuracy(features[1::2], shuffled[1::2]) < 0.6


def test_the_probe_rejects_bad_input_clearly():
    with pytest.raises(ValueError, match="features \\(n, dim\\) and labels \\(n,\\)"):
        fit_linear_probe(torch.randn(5, 3), torch.zeros(4, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="labels must lie in 0..1"):
        fit_linear_probe(torch.randn(5, 3), torch.full((5,), 3), 2)
