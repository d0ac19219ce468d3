"""Pieces of the training loop: batches per process, step seeds, schedule, weight average."""

import math

import pytest
import torch
from torch import nn

from equilibria.config import ConfigError, OptimConfig
from equilibria.training.averaging import WeightAverage
from equilibria.training.metrics import Meter
from equilibria.training.optim import build_optimizer, build_scheduler, lr_factor
from equilibria.training.sampling import epoch_order, shard, step_seed, train_batches


def test_processes_split_each_global_batch_and_together_see_it_whole():
    single = train_batches(100, 32, seed=7, epoch=3)
    assert len(single) == 3 and all(len(b) == 32 for b in single)  # the partial batch is dropped
    ranks = [train_batches(100, 32, seed=7, epoch=3, rank=r, world_size=4) for r in range(4)]
    for step, batch in enumerate(single):
        together = torch.cat([ranks[r][step] for r in range(4)])
        assert sorted(together.tolist()) == sorted(batch.tolist())
    assert not torch.equal(epoch_order(100, 7, 3), epoch_order(100, 7, 4))
    assert torch.equal(epoch_order(100, 7, 3), epoch_order(100, 7, 3))
    with pytest.raises(ConfigError, match="must be a multiple of that number"):
        train_batches(100, 30, seed=0, epoch=0, rank=0, world_size=4)
    with pytest.raises(ConfigError, match="larger than the 10 training samples"):
        train_batches(10, 32, seed=0, epoch=0)
    assert torch.cat([shard(10, r, 3) for r in range(3)]).sort().values.tolist() == list(range(10))


def test_step_seeds_differ_across_steps_ranks_and_seeds():
    seeds = {step_seed(s, t, r) for s in range(3) for t in range(50) for r in range(4)}
    assert len(seeds) == 3 * 50 * 4


def test_schedule_warms_up_then_follows_a_cosine_to_zero():
    config = OptimConfig(epochs=2, warmup_epochs=0.5, lr=0.1)
    model = nn.Linear(2, 2)
    optimizer = build_optimizer(config, model.parameters())
    scheduler = build_scheduler(optimizer, config, steps_per_epoch=10)
    rates = []
    for _ in range(20):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert rates[:5] == pytest.approx([0.1 * (k + 1) / 6 for k in range(5)])
    assert rates[5] == pytest.approx(0.1) and rates[-1] < 0.002
    assert all(a >= b for a, b in zip(rates[5:], rates[6:], strict=False))
    assert lr_factor(12, 20, 5, "constant") == 1.0
    assert lr_factor(5 + 15 // 2, 20, 5, "cosine") == pytest.approx(
        0.5 * (1 + math.cos(math.pi * 7 / 15))
    )


def test_weight_average_follows_the_formula_and_copies_buffers():
    model = nn.BatchNorm1d(3)
    average = WeightAverage(model, decay=0.75)
    expected = model.weight.detach().clone()
    for value in (1.0, 3.0, -2.0):
        with torch.no_grad():
            model.weight.fill_(value)
            model.running_mean.fill_(value)
        average.update(model)
        expected = 0.75 * expected + 0.25 * value
    torch.testing.assert_close(average.model.weight, expected)
    assert torch.equal(average.model.running_mean, model.running_mean)
    assert not average.model.weight.requires_grad
    with pytest.raises(ValueError, match=r"decay must lie in \(0, 1\)"):
        WeightAverage(model, 1.0)


def test_meter_means_are_per_sample_and_per_step():
    meter = Meter()
    meter.add(loss=6.0, correct=3, samples=4, steps=1, forward_nfe=8, residual=0.5)
    meter.add(loss=2.0, correct=4, samples=4, steps=1, forward_nfe=6, residual=0.1)
    means = meter.means()
    assert means["train_loss"] == 1.0 and means["train_accuracy"] == 7 / 8
    assert means["train_forward_nfe"] == 7.0 and means["train_residual"] == pytest.approx(0.3)
