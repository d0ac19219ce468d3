"""The multiscale DEQ: structure, exact implicit gradients, dropout and weight norm inside the
solve, per-call solver settings, pretraining, and the explicit counterpart."""

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

import equilibria as eq
from equilibria.config import Config
from equilibria.models import MDEQ, MDEQCell, ResNet, build_model, deq_options


def contractive_mdeq(**options) -> MDEQ:
    """A tiny float64 MDEQ whose cell is a contraction: each branch's conv2 is scaled down, so
    the injection dominates the GroupNorm that follows it and the solve converges to 1e-12."""
    torch.manual_seed(0)
    settings = dict(
        channels=(4, 4),
        expansion=1,
        groups=2,
        head_channels=4,
        head_grid=2,
        tol=1e-12,
        max_iter=200,
        backward=eq.Implicit("anderson", tol=1e-12, max_iter=200),
    )
    model = MDEQ(1, 3, **{**settings, **options}).double()
    with torch.no_grad():
        for block in model.cell.blocks:
            block.conv2.parametrizations.weight.original0.mul_(0.2)
    return model


def test_state_is_one_tensor_per_resolution_and_the_cell_keeps_its_structure():
    cell = MDEQCell((4, 8, 8), expansion=1, groups=4)
    x = torch.randn(2, 4, 7, 7)
    z0 = cell.init_state(x)
    assert [tuple(z.shape) for z in z0] == [(2, 4, 7, 7), (2, 8, 4, 4), (2, 8, 2, 2)]
    out = cell(z0, x)
    assert isinstance(out, tuple) and [o.shape for o in out] == [z.shape for z in z0]
    with pytest.raises(ValueError, match=r"injection of shape \(batch, 4, height, width\)"):
        cell.init_state(torch.randn(2, 3, 7, 7))
    model = MDEQ(3, 10, channels=(8, 8, 8), expansion=1, max_iter=4)
    assert model(torch.randn(2, 3, 9, 11)).shape == (2, 10)
    with pytest.raises(ValueError, match="expects images"):
        model(torch.randn(2, 9))


def test_output_is_the_equilibrium_of_every_branch():
    model = contractive_mdeq().eval()
    x = torch.randn(3, 1, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        model(x)
        stats = model.stats
        z = stats.forward.z
        fz = model.cell(z, model.stem(x))
    assert stats.forward.all_converged and stats.forward_nfe < 200
    for part, image in zip(z, fz, strict=True):
        torch.testing.assert_close(image, part, atol=1e-10, rtol=0)


def test_implicit_gradients_match_finite_differences():
    model = contractive_mdeq()
    x = torch.randn(2, 1, 6, 6, dtype=torch.float64)
    target = torch.tensor([0, 2])

    def loss() -> torch.Tensor:
        return nn.functional.cross_entropy(model(x), target)

    loss().backward()
    assert model.stats.backward is not None and model.stats.backward.all_converged
    checked = {
        "stem": model.stem[0].weight,
        "cell conv (direction)": model.cell.blocks[0].conv1.parametrizations.weight.original1,
        "cell conv (norm)": model.cell.blocks[1].conv2.parametrizations.weight.original0,
        "fusion": model.cell.fusion.post[0][1].parametrizations.weight.original1,
        "head": model.head.classify.weight,
    }
    for name, parameter in checked.items():
        index = (0,) * parameter.dim()
        with torch.no_grad():
            original = parameter[index].item()
            parameter[index] = original + 1e-6
            up = loss().item()
            parameter[index] = original - 1e-6
            down = loss().item()
            parameter[index] = original
        numeric = (up - down) / 2e-6
        assert parameter.grad[index].item() == pytest.approx(numeric, rel=1e-5, abs=1e-9), name


def test_dropout_keeps_one_mask_per_solve_and_weight_norm_covers_the_cell():
    model = contractive_mdeq(dropout=0.3)
    convs = [m for m in model.cell.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(parametrize.is_parametrized(c, "weight") for c in convs)
    assert not parametrize.is_parametrized(model.stem[0], "weight")
    x = torch.randn(2, 1, 6, 6, dtype=torch.float64)
    first = model(x)
    # a fresh mask at every iteration would leave a residual of the size of the dropout noise
    assert model.stats.forward.all_converged
    second = model(x)
    assert not torch.allclose(first, second)  # a new mask for the next forward
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_solver_settings_can_change_for_one_call_and_stats_describe_it():
    model = MDEQ(1, 10, channels=(4, 8), expansion=1, max_iter=6).eval()
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        model(x, solver="picard", tol=0.0, max_iter=3)
    assert model.stats.forward_nfe == 3 and model.stats.forward.solver == "picard"
    with torch.no_grad():
        model(x)
    assert model.deq.settings.max_iter == 6 and model.stats.forward.solver == "anderson"


def test_config_builds_the_described_model_and_deq():
    config = Config().override(
        [
            "deq.backward=phantom",
            "deq.phantom_steps=3",
            "deq.jacobian_gamma=0.5",
            "deq.jacobian_p=0.2",
            "deq.pretrain_steps=2",
            "deq.pretrain_depth=3",
            "deq.eval_max_iter=none",
            "deq.solver=broyden",
        ]
    )
    options = deq_options(config)
    assert isinstance(options["backward"], eq.Phantom) and options["backward"].steps == 3
    assert options["jacobian_penalty"] == eq.JacobianPenalty(gamma=0.5, p=0.2)
    assert options["pretrain"] == eq.Pretrain(depth=3, steps=2)
    model = build_model(config, (1, 8, 8), 10)
    assert model.deq.settings.solver == eq.Broyden()
    assert model.deq.eval_settings.max_iter == config.deq.for_task("classify").max_iter == 8
    x = torch.randn(2, 1, 8, 8)
    pretraining = []
    for _ in range(3):
        model(x).sum().backward()
        pretraining.append(model.stats.pretraining)
    assert pretraining == [True, True, False]
    implicit = deq_options(
        Config().override(
            ["deq.backward=implicit", "deq.backward_max_iter=5", "deq.backward_tol=1e-6"]
        )
    )
    assert implicit["backward"].max_iter == 5 and implicit["backward"].tol == 1e-6
    assert implicit["backward"].solver is None  # the default damped fixed-point iteration
    anderson = deq_options(
        Config().override(["deq.backward=implicit", "deq.backward_solver=anderson"])
    )["backward"]
    assert anderson.solver == eq.Anderson()


def test_bf16_autocast_trains_on_cpu():
    """Under bf16 autocast the forward and its gradient agree with float32 to bf16 accuracy.

    bf16 keeps 8 bits (0.4% per operation): the logits and the solve's residuals agree to a few
    percent, and the gradient keeps its direction and size (an explicit ResNet's bf16 gradient
    differs from its float32 one as much or more: cosines of 0.74 to 0.98 on such inputs).
    """
    model = MDEQ(1, 10, channels=(4, 4), expansion=1, max_iter=4)
    x = torch.randn(4, 1, 8, 8)
    results = []
    for bf16 in (False, True):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        nn.functional.cross_entropy(logits.float(), torch.arange(4)).backward()
        grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        results.append((logits.detach().float(), grad, model.stats.forward.residual))
    (logits, grad, residual), (logits_bf16, grad_bf16, residual_bf16) = results
    assert float((logits_bf16 - logits).norm() / logits.norm()) < 0.05
    torch.testing.assert_close(residual_bf16, residual, rtol=0, atol=0.02)
    cosine = float(nn.functional.cosine_similarity(grad_bf16, grad, dim=0))
    ratio = float(grad_bf16.norm() / grad.norm())
    assert cosine > 0.75 and 0.7 < ratio < 1.4, (cosine, ratio)  # measured: 0.88 and 1.15


def test_explicit_resnet_counterpart():
    resnet = ResNet(1, 10, channels=(4, 8), blocks=3, expansion=1)
    assert resnet(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    assert resnet.stats is None
    assert all(block.residual for stage in resnet.stages for block in stage)
    with pytest.raises(TypeError, match="runs no solver, so max_iter cannot be set"):
        resnet(torch.randn(2, 1, 8, 8), max_iter=3)
    one = build_model(
        Config().override(["model.arch=resnet", "model.resnet_blocks=1"]), (1, 8, 8), 10
    )
    mdeq = build_model(Config(), (1, 8, 8), 10)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert abs(count(one) - count(mdeq)) / count(mdeq) < 0.2  # same parts, once each
