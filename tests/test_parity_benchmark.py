"""The parity benchmark: both libraries trained from one start, counted alike, judged fairly."""

import pytest
import torch
from torch import nn

from benchmarks.parts.parity import (
    Data,
    EquilibriumModel,
    RunResult,
    SolveCaps,
    TanhCell,
    Task,
    checks,
    mean_and_error,
    run_task,
)

pytest.importorskip("torchdeq")


def tiny_task(epochs=1):
    def build():
        return EquilibriumModel(nn.Linear(4, 8), TanhCell(8), nn.Linear(8, 3))

    def data(seed):
        generator = torch.Generator().manual_seed(seed)
        x = torch.randn(24, 4, generator=generator)
        y = torch.randint(3, (24,), generator=generator)
        return Data(x[:16], y[:16], x[16:], y[16:])

    return Task("tiny", "tanh cell on noise", "accuracy", build, data, epochs, batch=8)


def test_both_libraries_train_from_the_same_weights_within_their_caps():
    caps = SolveCaps(tol=1e-3, max_iter=6, backward_max_iter=5)
    results = run_task(tiny_task(), [0, 1], caps)
    assert set(results) == {"equilibria", "torchdeq"}
    for runs in results.values():
        assert len(runs) == 2
        for r in runs:
            assert 1 <= r.forward_nfe <= caps.max_iter
            assert 1 <= r.backward_nfe <= caps.backward_max_iter
            assert r.train_seconds > 0 and 0 <= r.metric <= 1
            assert 0 <= r.test_converged <= 1


def test_same_start_means_same_first_forward():
    # with training off (0 epochs) both libraries evaluate the identical initial model
    caps = SolveCaps(tol=1e-6, max_iter=50, backward_max_iter=5)
    results = run_task(tiny_task(epochs=0), [3], caps)
    assert results["equilibria"][0].metric == results["torchdeq"][0].metric


def result(metric, seconds=1.0):
    return RunResult(metric, seconds, 10.0, 10.0, 0.01, 1.0)


def test_checks_compare_within_one_standard_error_in_the_right_direction():
    task = tiny_task()
    even = {"equilibria": [result(0.90), result(0.92)], "torchdeq": [result(0.91), result(0.93)]}
    worse = {"equilibria": [result(0.80), result(0.81)], "torchdeq": [result(0.91), result(0.92)]}
    assert checks(task, even)[0].passed is True
    assert checks(task, worse)[0].passed is False
    lower_is_better = Task("lm", "", "bits/char", task.build, task.data, 1)
    assert checks(lower_is_better, worse)[0].passed is True  # lower bits per character win
    fast = {"equilibria": [result(0.9, 0.5)], "torchdeq": [result(0.9, 1.0)]}
    slow = {"equilibria": [result(0.9, 0.9)], "torchdeq": [result(0.9, 1.0)]}
    assert checks(task, fast)[1].passed is True and checks(task, slow)[1].passed is False


def test_mean_and_standard_error():
    mean, error = mean_and_error([1.0, 2.0, 3.0])
    assert mean == 2.0 and error == pytest.approx(1 / 3**0.5)
    assert mean_and_error([5.0]) == (5.0, 0.0)
