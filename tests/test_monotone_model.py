"""The monotone-operator image classifier behind `model.arch=monotone`."""

import pytest
import torch

import equilibria as eq
from equilibria.config import Config, ConfigError
from equilibria.models import MonotoneNet, build_model


def test_the_config_builds_a_monotone_classifier_whose_solves_converge():
    torch.manual_seed(0)
    config = Config().override(
        [
            "model.arch=monotone",
            "deq.backward=implicit",
            "deq.solver=peaceman_rachford",
            "deq.max_iter=100",
            "deq.backward_max_iter=100",
        ]
    )
    model = build_model(config, (1, 8, 8), 10)
    assert isinstance(model, MonotoneNet)
    assert model.deq.backward.solver.name == "peaceman_rachford"  # not the damped default
    logits = model(torch.randn(4, 1, 8, 8))
    assert logits.shape == (4, 10) and model.stats.forward.all_converged
    logits.sum().backward()
    assert model.stats.backward.all_converged
    assert all(p.grad is not None for p in model.cell.parameters())


def test_joint_initializer_is_refused_for_the_monotone_model():
    config = Config().override(["model.arch=monotone", "deq.init=joint"])
    with pytest.raises(ConfigError, match="deq.init=joint is not available"):
        build_model(config, (1, 8, 8), 10)


def test_a_splitting_solver_on_an_mdeq_says_what_it_needs():
    model = build_model(Config().override(["deq.solver=peaceman_rachford"]), (1, 8, 8), 10)
    with pytest.raises(eq.UnsupportedError, match="monotone splitting"):
        model(torch.randn(2, 1, 8, 8))


def test_the_splitting_reaches_the_solves_through_the_layers_wrappers():
    """With fixed-point correction (which records the solve) and a Jacobian penalty (which
    watches the first application), the splitting solvers still find the cell's splitting."""
    from equilibria.monotone import MonotoneConvCell

    torch.manual_seed(0)
    deq = eq.DEQ(
        MonotoneConvCell(4, 2),
        "peaceman_rachford",
        tol=1e-4,
        max_iter=200,
        backward=eq.Implicit("peaceman_rachford", max_iter=200),
        correction=eq.FixedPointCorrection(2),
        jacobian_penalty=eq.JacobianPenalty(gamma=0.1),
    )
    z = deq(torch.randn(3, 2, 6, 6))
    z.sum().backward()
    assert deq.stats.forward.all_converged and deq.stats.backward.all_converged
    assert deq.stats.correction is not None and deq.stats.jacobian_loss > 0
