"""The reversible backward in float32: how far its rebuilt states and its gradient are from exact.

Each cell is solved by the reversible iteration (tolerance 0, so exactly the given number of
coupled steps) in float32 and in float64. The rebuild error is the largest relative error of
the states the backward rebuilt without kept states (`checkpoint_every=None`); the gradient
error is the relative distance of the float32 gradient (over the input and the cell's
parameters) with the automatic kept-state interval from the float64 one with a state kept
every step. Both for the states kept in the cell's dtype (`precision="native"`) and in float64
(the default). Saved bytes: what the forward keeps for the backward, with the automatic
interval, at the longest run.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import torch

import equilibria as eq
from equilibria.errors import NonFiniteError

from ..config import BenchConfig
from ..problems import Problem, conv, mdeq, slow_tanh
from ..registry import register
from ..report import Check, Column, Section, Table

GRADIENT_TARGET = 1e-5  # the default's float32 gradient against float64, relative


@dataclass(frozen=True)
class Settings:
    cells: tuple[str, ...]
    relaxations: tuple[float, ...]
    steps: tuple[int, ...]
    batch: int = 32

    @classmethod
    def for_config(cls, config: BenchConfig) -> Settings:
        if config.quick:
            return cls(cells=("tanh",), relaxations=(0.5,), steps=(2, 5), batch=4)
        return cls(cells=("tanh", "conv", "mdeq"), relaxations=(0.5, 0.8), steps=(5, 10, 20, 40))


def build(cell: str, batch: int, seed: int) -> Problem:
    """The float32 problem of a cell name."""
    if cell == "tanh":
        return slow_tanh(64, batch=batch, seed=seed)
    if cell == "conv":
        return conv(16, 8, batch=batch, seed=seed)
    return mdeq(batch=batch, seed=seed)


@dataclass
class Outcome:
    gradient: torch.Tensor  # float64, over the input and the parameters
    rebuild_error: float
    saved_bytes: int


def solve_and_differentiate(problem: Problem, backward: eq.Reversible, steps: int) -> Outcome:
    """Exactly `steps` coupled steps, then the gradient of the problem's loss."""
    x = problem.x.detach().clone().requires_grad_()
    inputs = [x, *problem.cell.parameters()]
    saved = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        saved += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        solution = eq.solve(
            lambda z: problem.cell(z, x),
            problem.z0(),
            backward=backward,
            tol=0.0,
            max_iter=2 * steps + 1,
            patience=None,
            on_failure="ignore",
        )
    try:
        grads = torch.autograd.grad(
            (solution.z * problem.upstream).sum(), inputs, allow_unused=True
        )
    except NonFiniteError:  # a rebuilt state ran away: no gradient to compare
        flat = torch.full((sum(t.numel() for t in inputs),), torch.nan, dtype=torch.float64)
        return Outcome(flat, float("inf"), saved)
    flat = torch.cat(
        [
            (g if g is not None else torch.zeros_like(t)).flatten().double()
            for g, t in zip(grads, inputs, strict=True)
        ]
    )
    return Outcome(flat, float(solution.reconstruction_error or 0.0), saved)


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def measure(problem: Problem, b: float, precision: str, steps: tuple[int, ...]) -> dict:
    """One row: rebuild errors without kept states and gradient errors with the automatic
    interval, at each number of steps; the interval and the saved bytes at the longest."""
    exact64 = problem.to(torch.device("cpu"), torch.float64)
    row: dict = {"b": b, "precision": precision}
    rebuild, gradient = [], []
    outcome = None
    for count in steps:
        reference = solve_and_differentiate(
            exact64, eq.Reversible(b, checkpoint_every=1, precision="native"), count
        ).gradient
        plain = solve_and_differentiate(
            problem, eq.Reversible(b, checkpoint_every=None, precision=precision), count
        )
        outcome = solve_and_differentiate(problem, eq.Reversible(b, precision=precision), count)
        rebuild.append(plain.rebuild_error)
        gradient.append(relative(outcome.gradient, reference))
    row["rebuild"] = " / ".join(f"{e:.0e}" for e in rebuild)
    row["gradient"] = " / ".join(f"{e:.0e}" for e in gradient)
    row["worst_gradient"] = max(gradient)
    row["interval"] = eq.Reversible(b, precision=precision).interval(
        problem.upstream.dtype, problem.z0().numel()
    )
    row["saved_mb"] = outcome.saved_bytes / 2**20 if outcome else None
    return row


COLUMNS = [
    Column("cell", "cell"),
    Column("b", "b"),
    Column("precision", "states"),
    Column("rebuild", "rebuild error, no kept states"),
    Column("gradient", "gradient error, auto interval"),
    Column("interval", "auto interval (steps)"),
    Column("saved_mb", "saved MB at the longest", ".2f"),
    Column("worst_gradient", "worst gradient error", ".1e"),
]


@register("reversible", "The reversible backward in float32: rebuild and gradient errors", order=42)
def run(config: BenchConfig) -> Section:
    s = Settings.for_config(config)
    started = time.perf_counter()
    steps = " / ".join(map(str, s.steps))
    section = Section(
        "reversible", "The reversible backward in float32: rebuild and gradient errors"
    )
    section.summary = __doc__.split("\n\n", 1)[1].replace("\n", " ").strip()
    table = Table(f"Relative errors at {steps} coupled steps (float32 against float64)", COLUMNS)
    defaults = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the rebuild warnings are what the table measures
        for cell in s.cells:
            problem = build(cell, s.batch, config.seed)
            section.notes.append(f"{cell}: {problem.description}.")
            for b in s.relaxations:
                for precision in ("native", "float64"):
                    row = {"cell": cell, **measure(problem, b, precision, s.steps)}
                    table.add(**row)
                    if b == 0.5 and precision == "float64":
                        defaults.append(row)
    section.tables.append(table)
    worst = max(defaults, key=lambda r: r["worst_gradient"])
    section.checks.append(
        Check(
            f"the default (b 0.5, float64 states, auto interval): float32 gradient within "
            f"{GRADIENT_TARGET:g} of float64 on every cell and length",
            f"worst {worst['worst_gradient']:.1e} ({worst['cell']})",
            worst["worst_gradient"] <= GRADIENT_TARGET,
        )
    )
    section.settings = {
        "cells": ", ".join(s.cells),
        "b": ", ".join(map(str, s.relaxations)),
        "steps": steps,
        "batch": str(s.batch),
        "wall time": f"{time.perf_counter() - started:.0f} s",
    }
    return section
