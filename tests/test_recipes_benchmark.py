"""The recipes benchmark part judges its targets from the runs' summaries (the training runs and
the step memory are replaced by recorded values here)."""

from pathlib import Path

import pytest

from benchmarks.config import BenchConfig
from benchmarks.parts import recipes

# recipe -> (test accuracy, test NFE, test converged, training residuals by epoch)
RECORDED = {
    recipes.DEFAULT: (0.995, 6.0, 1.0, (5e-3, 2e-4, 2e-4)),
    "one-step": (0.993, 10.0, 0.97, (5e-3, 2e-4, 3e-4)),
    "implicit": (0.990, 11.0, 0.8, (5e-3, 2e-3, 9e-3)),
    "implicit + penalty": (0.996, 7.0, 1.0, (5e-3, 3e-4, 2e-4)),
    "reversible": (0.985, 11.0, 0.5, (5e-2, 3e-2, 4e-2)),
    "reversible + penalty": (0.989, 9.0, 0.99, (5e-3, 4e-4, 3e-4)),
}


def recipe_of(overrides: tuple[str, ...]) -> str:
    options = tuple(o for o in overrides if not o.startswith(("run.seed", "optim.epochs")))
    return next(name for name, o in recipes.RECIPES.items() if o == options)


def fake_train(out: Path, overrides: tuple[str, ...], threads: int | None = 1) -> dict:
    assert threads == 1 and "optim.epochs=2" in overrides  # the quick preset, one thread
    seed = int(next(o for o in overrides if o.startswith("run.seed=")).split("=")[1])
    accuracy, nfe, converged, residuals = RECORDED[recipe_of(overrides)]
    backward = 6.0 if "deq.backward=reversible" in overrides else 0.0
    history = [
        {"train_residual": r, "train_forward_nfe": 7.0, "train_backward_nfe": backward}
        for r in residuals
    ]
    return {
        "test_accuracy": accuracy + 0.001 * seed,
        "test_converged": converged,
        "mean_forward_nfe": nfe,
        "train_seconds": 60.0,
        "equilibrium": {
            "train_residual_first": residuals[0],
            "train_residual_final": residuals[-1],
        },
        "history": history,
    }


def fake_memory(overrides, data_dir) -> dict:
    penalty = "deq.jacobian_gamma=0" not in overrides
    assert penalty == ("deq.jacobian_p=1" in overrides)  # a step that computes the penalty
    return {"parameters": 1, "saved_mb": 3.0 if penalty else 2.0, "peak_mb": 9.0}


@pytest.fixture
def faked(monkeypatch):
    monkeypatch.setattr(recipes, "train", fake_train)
    monkeypatch.setattr(recipes, "step_memory", fake_memory)


def test_recipes_part_reports_every_recipe_and_judges_the_targets(faked, tmp_path):
    section = recipes.run_recipes(BenchConfig(quick=True, out=tmp_path, seeds=2))
    summary, per_seed = section.tables
    assert summary.column("recipe") == list(recipes.RECIPES)
    assert len(per_seed.rows) == 2 * len(recipes.RECIPES)
    assert summary.column("backward") == [0.0, 0.0, 0.0, 0.0, 6.0, 6.0]
    assert summary.column("saved_mb") == [3.0, 2.0, 2.0, 3.0, 2.0, 3.0]
    # seeds 0 and 1: the default's accuracy 99.5% and 99.6%, standard error 0.05
    assert summary.rows[0]["accuracy"] == "99.55 ± 0.05"
    verdicts = {check.target.split(" keeps")[0]: check.passed for check in section.checks}
    assert verdicts[recipes.DEFAULT] and verdicts["one-step"]
    assert not verdicts["implicit"]  # 80% converged, and the residual grew
    assert not verdicts["reversible"]  # 50% converged
    checks = {check.target[:40]: check for check in section.checks}
    assert checks["digits default: mean test accuracy >= 99"].passed
    # the best, implicit + penalty at 99.65% ± 0.05, is 0.1 point above the default's 99.55%
    best = next(c for c in section.checks if c.target.startswith("the default reaches"))
    assert not best.passed and "implicit + penalty" in best.measured
    one_step, reversible = [c for c in section.checks if "Jacobian penalty" in c.target]
    assert one_step.passed and "1.67x" in one_step.measured  # 10 -> 6 NFE, 99.3% vs 99.5%
    assert not reversible.passed  # 11 -> 9 NFE: 1.22x


def test_mean_and_error():
    assert recipes.mean_and_error([1.0]) == (1.0, 0.0)
    mean, error = recipes.mean_and_error([1.0, 2.0, 3.0])
    assert mean == 2.0 and error == pytest.approx(1 / 3**0.5)
