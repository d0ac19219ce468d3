"""The SciPy benchmark part: its quick run, its evaluation counts and its target checks."""

import math

import pytest
import torch

import equilibria as eq
from benchmarks.config import BenchConfig
from benchmarks.nonlinear_problems import chandrasekhar, collection, tanh_map
from benchmarks.timing import CLOCKS

pytest.importorskip("scipy")
pytest.importorskip("threadpoolctl")

from benchmarks.parts import scipy_solvers as part  # noqa: E402


def test_the_quick_run_fills_every_table_with_counted_solves(tmp_path):
    section = part.run(BenchConfig(quick=True, out=tmp_path))
    problems = collection(quick=True)
    tanh_maps = sum(p.source == "tanh map" for p in problems)
    listing, summary, every = section.tables
    assert listing.column("problem") == [p.name for p in problems]
    assert [c.key for c in summary.columns] == ["problem", "n", *part.LABELS]
    assert len(summary.rows) == len(problems) + 1  # and the row of solved counts
    assert len(every.rows) == len(problems) * 6 + tanh_maps
    for row in every.rows:
        evaluations = row["evaluations"]
        assert isinstance(evaluations, int) and 0 < evaluations <= part.Settings(cap=300).cap
        assert isinstance(row["solved"], bool) and row["ms"] >= 0
        if row["solved"]:
            assert row["residual"] <= part.tolerance(problem_named(problems, row["problem"]))
    assert len(section.checks) == 4
    assert all(check.passed in (True, False, None) for check in section.checks)


def problem_named(problems, name):
    return next(p for p in problems if p.name == name)


def test_our_count_is_the_librarys_own_count_of_evaluations_and_products():
    problem = tanh_map(0, 1.3, d=8)
    counted = part.CountingMap(problem.fixed_point_map)
    with torch.no_grad():
        solution = eq.solve(
            counted, problem.x0(), eq.Newton(), tol=1e-10, max_iter=200, stop_mode="abs",
            patience=None, on_failure="ignore",
        )  # fmt: skip
    assert counted.calls == solution.nfe > 1


def test_scipys_evaluations_are_counted_and_capped():
    problem = chandrasekhar(0.5, 20)
    target = part.tolerance(problem)
    outcome = part.solve_theirs(problem, "newton_krylov", target, 500, CLOCKS["wall"])
    assert outcome.solved and outcome.residual <= target and outcome.stopped == "converged"
    capped = part.solve_theirs(problem, "newton_krylov", target, 5, CLOCKS["wall"])
    assert not capped.solved and capped.evaluations == 5 and capped.stopped == "cap"
    residual = part.CountingResidual(problem, target, cap=1)
    residual(problem.start.numpy())
    with pytest.raises(part.BudgetExhausted):
        residual(problem.start.numpy())


def test_dense_newton_counts_a_jacobian_as_n_evaluations():
    problem = tanh_map(1, 1.4, d=8)
    outcome = part.solve_dense_newton(problem, 1e-10, 2000, CLOCKS["wall"])
    assert outcome.solved and (outcome.evaluations - 1) % (problem.size + 1) == 0


def outcome(solved, evaluations):
    return part.Outcome(solved, evaluations, 0.0 if solved else math.inf, 0.0, "")


def test_coverage_checks_name_every_miss_and_every_costlier_solve():
    results = {
        "a": {"ours": outcome(True, 10), "theirs": outcome(True, 20)},
        "b": {"ours": outcome(True, 30), "theirs": outcome(True, 20)},
        "c": {"ours": outcome(False, 99), "theirs": outcome(True, 20)},
        "d": {"ours": outcome(True, 5), "theirs": outcome(False, 99)},
    }
    check = part.coverage_check(results, "ours", "theirs")
    assert (
        check.passed is False
        and "2 of the 3" in check.measured
        and "Not solved: c" in check.measured
    )
    costly = part.coverage_check(
        {k: results[k] for k in "abd"}, "ours", "theirs", at_most_their_evaluations=True
    )
    assert costly.passed is False and "b (30 vs 20)" in costly.measured
    assert part.coverage_check({k: results[k] for k in "ad"}, "ours", "theirs").passed
    none = part.coverage_check({"d": results["d"]}, "ours", "theirs")
    assert none.passed is None and "solved none" in none.measured
