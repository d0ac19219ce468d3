"""The Krylov benchmark part: its rows count what the solves did, and its check reads them."""

import torch

from benchmarks.parts.krylov import (
    COLUMNS,
    HEADLINE_CASE,
    HEADLINE_TARGET,
    Case,
    Settings,
    adjoint_row,
    forward_row,
    headline_check,
    nonlinear_solvers,
)
from benchmarks.report import Column, Table
from benchmarks.timing import CLOCKS


def test_gmres_is_measured_only_on_the_adjoint():
    assert not {"gmres", "peaceman_rachford", "forward_backward"} & set(nonlinear_solvers())
    assert {"picard", "anderson", "broyden", "newton"} <= set(nonlinear_solvers())


def tiny_case():
    torch.manual_seed(0)
    w = torch.randn(6, 6) * 0.15
    u = torch.randn(6, 6, requires_grad=True)
    x = torch.randn(4, 6)
    return Case(
        "tiny", "tanh", lambda z: torch.tanh(z @ w.T + x @ u.T), torch.zeros(4, 6), [u],
        torch.randn(4, 6),
    )  # fmt: skip


def test_rows_report_the_solves_counts_and_convergence():
    settings = Settings(targets=(1e-5,), cap=50, repeats=1)
    case = tiny_case()
    row = forward_row(case, "newton", 1e-5, settings, CLOCKS["wall"])
    assert row["converged"] == 1.0 and row["worst"] <= 1e-5 and 1 < row["nfe"] <= 50
    for solver in ("anderson", "gmres"):
        row = adjoint_row(case, solver, 1e-5, settings, CLOCKS["wall"])
        assert row["converged"] == 1.0 and row["worst"] <= 1e-5 and 1 < row["nfe"] <= 50


def test_the_headline_check_compares_with_anderson_on_the_same_solve():
    def table(rows):
        t = Table("t", [*COLUMNS, Column("forward_converged", "")])
        for solver, nfe, converged in rows:
            t.add(case=HEADLINE_CASE, solver=solver, target=HEADLINE_TARGET, nfe=nfe,
                  converged=converged)  # fmt: skip
        return t

    forward = table([("anderson", 100, 1.0), ("newton", 80, 1.0)])
    adjoint = table([("anderson", 60, 1.0), ("gmres", 30, 1.0), ("gmres, restart 40", 40, 1.0)])
    check = headline_check(forward, adjoint, HEADLINE_CASE)
    assert check.passed and "0.80x" in check.measured and "(0.50x)" in check.measured
    adjoint = table([("anderson", 60, 1.0), ("gmres", 20, 0.5)])  # unconverged: no credit
    check = headline_check(forward, adjoint, HEADLINE_CASE)
    assert check.passed is False and "did not converge" in check.measured
    assert headline_check(forward, adjoint, "another cell").passed is None
