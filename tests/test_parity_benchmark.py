"""The parity benchmark: both libraries trained from one start, counted alike, judged fairly."""

import pytest
import torch
from torch import nn

from benchmarks.config import BenchConfig
from benchmarks.parts.parity import (
    DEFAULTS,
    LIBRARIES,
    REVERSIBLE,
    Data,
    EquilibriumModel,
    RunResult,
    SolveCaps,
    TanhCell,
    Task,
    checks,
    mean_and_error,
    reversible_accuracy_checks,
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


def test_every_recipe_trains_from_the_same_weights_within_its_caps():
    caps = SolveCaps(tol=1e-3, max_iter=6, backward_max_iter=5)
    results = run_task(tiny_task(), [0, 1], caps)
    assert set(results) == set(LIBRARIES)
    for runs in results.values():
        assert len(runs) == 2
        for r in runs:
            assert r.train_seconds > 0 and 0 <= r.metric <= 1
            assert 0 <= r.test_converged <= 1 and r.train_residual >= 0
            assert r.rebuild_warnings == 0
    for library in ("equilibria", "torchdeq"):
        for r in results[library]:
            assert 1 <= r.forward_nfe <= caps.max_iter
            assert 1 <= r.backward_nfe <= caps.backward_max_iter
            assert r.backward_cost >= r.backward_nfe + 2  # + f(z*) and its VJP, at least
    for r in results[REVERSIBLE]:
        # the task's cap of 10: f(z_0), then two evaluations per step, at most 4 steps; the
        # backward rebuilds each step with two evaluations and two vector-Jacobian products
        assert 1 <= r.forward_nfe <= 9
        assert 0 < r.backward_nfe <= 8
        assert r.backward_cost == pytest.approx(2 * r.backward_nfe)
    for r in results["torchdeq defaults"]:  # fixed-point iteration, one-step gradient
        assert 1 <= r.forward_nfe <= 40
        assert r.backward_nfe == 0 and r.backward_cost == 2
    for r in results["equilibria defaults"]:  # Anderson within 50, implicit backward
        assert 1 <= r.forward_nfe <= 50 and r.backward_nfe >= 1


def test_same_start_means_same_first_forward():
    # with training off (0 epochs) both libraries evaluate the identical initial model
    caps = SolveCaps(tol=1e-6, max_iter=50, backward_max_iter=5)
    results = run_task(tiny_task(epochs=0), [3], caps, ("equilibria", "torchdeq"))
    assert set(results) == {"equilibria", "torchdeq"}
    assert results["equilibria"][0].metric == results["torchdeq"][0].metric


def result(metric, seconds=1.0, forward_nfe=10.0):
    return RunResult(metric, seconds, forward_nfe, 10.0, 0.01, 1.0)


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


def test_reversible_and_default_recipes_are_judged_against_their_own_references():
    task = tiny_task()
    results = {
        "equilibria": [result(0.90, 1.0, forward_nfe=20.0)],
        "torchdeq": [result(0.90, 1.0, forward_nfe=20.0)],
        REVERSIBLE: [result(0.90, 0.5, forward_nfe=9.0)],
        DEFAULTS[0]: [result(0.95, 2.0)],
        DEFAULTS[1]: [result(0.90, 4.0)],
    }
    found = {c.target: c for c in checks(task, results)}
    assert len(found) == 6
    nfe, time = (c for name, c in found.items() if name.startswith("tiny, reversible"))
    assert nfe.passed and time.passed and time.measured == "0.50x"
    accuracy, time = (c for name, c in found.items() if name.startswith("tiny, defaults"))
    assert accuracy.passed and time.passed and time.measured == "0.50x"  # 2 s vs 4 s
    results[REVERSIBLE] = [result(0.80, 0.7, forward_nfe=11.0)]
    assert not any(c.passed for c in checks(task, results) if "reversible" in c.target)
    # the MDEQ cell's reversible accuracy is also held against TorchDEQ's
    mdeq = Task("mdeq", "", "accuracy", task.build, task.data, 1)
    assert len(checks(mdeq, results)) == 7

    def cell(reversible):
        return task, {"equilibria": [result(0.90)], REVERSIBLE: [result(reversible)]}

    four = {name: cell(0.90) for name in "abcd"} | {"e": cell(0.5)}
    (check,) = reversible_accuracy_checks(four)
    assert check.passed and check.measured == "4 of 5 (worse: e)"
    three = {name: cell(0.90) for name in "abc"} | {"d": cell(0.5), "e": cell(0.5)}
    assert not reversible_accuracy_checks(three)[0].passed


def test_cells_and_seeds_can_be_picked():
    config = BenchConfig(seed=4, seeds=1, cases=("mlp-tanh",))
    assert config.seed_list(3) == [4]
    assert config.pick_cases(["res-conv", "mlp-tanh"]) == ["mlp-tanh"]
    assert BenchConfig(seed=1).seed_list(3) == [1, 2, 3]
    assert BenchConfig().pick_cases(["a", "b"]) == ["a", "b"]
    with pytest.raises(ValueError, match="unknown case"):
        config.pick_cases(["res-conv"])


def test_mean_and_standard_error():
    mean, error = mean_and_error([1.0, 2.0, 3.0])
    assert mean == 2.0 and error == pytest.approx(1 / 3**0.5)
    assert mean_and_error([5.0]) == (5.0, 0.0)
