"""The reversible benchmark part at a tiny size: its errors against independent references."""

import torch

import equilibria as eq
from benchmarks.config import BenchConfig
from benchmarks.parts import reversible
from benchmarks.problems import slow_tanh


def test_the_quick_part_reports_exact_float64_states_and_a_met_target():
    section = reversible.run(BenchConfig(quick=True))
    (table,) = section.tables
    rows = {row["precision"]: row for row in table.rows}
    assert set(rows) == {"native", "float64"}
    # float64 states rebuild a float32 cell's few steps at b = 0.5 exactly
    assert rows["float64"]["rebuild"] == "0e+00 / 0e+00"
    assert rows["float64"]["worst_gradient"] < 1e-6
    assert section.checks[0].passed is True


def test_the_gradient_of_a_float64_run_is_its_own_reference():
    problem = slow_tanh(16, batch=3).to(torch.device("cpu"), torch.float64)
    backward = eq.Reversible(0.5, checkpoint_every=1, precision="native")
    first = reversible.solve_and_differentiate(problem, backward, 4)
    second = reversible.solve_and_differentiate(problem, backward, 4)
    assert reversible.relative(first.gradient, second.gradient) == 0.0
    assert first.saved_bytes > 0 and first.rebuild_error < 1e-12
