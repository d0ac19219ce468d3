"""Training memory against depth: the DEQ stays flat, an explicit weight-tied net grows.

At depth k the DEQ runs exactly k solver evaluations forward and k backward (tolerance 0); the
explicit network applies the same cell k times with autograd recording every application. Three
meters: bytes autograd saves for backward (activations only, parameters excluded), the peak of
tensor memory during a training step, and how far the process's resident memory rises.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

import equilibria as eq

from ..config import BenchConfig
from ..meters import SavedTensorBytes, peak_rss_bytes, peak_tensor_bytes
from ..plots import line_plot
from ..problems import Problem, conv, slow_tanh
from ..registry import register
from ..report import Check, Column, Figure, Section, Table

FLAT_TOLERANCE = 0.05  # the DEQ's spread over depths >= FLAT_FROM, relative to its smallest
FLAT_FROM = 10
LINEAR_R2 = 0.99  # the explicit net's growth must fit a line this well


@dataclass(frozen=True)
class Settings:
    problems: tuple[Callable[[], Problem], ...]
    depths: tuple[int, ...] = (5, 10, 20, 50, 100)
    solver: str = "anderson"

    @classmethod
    def for_config(cls, config: BenchConfig) -> Settings:
        tanh = lambda: slow_tanh(256, 64, seed=config.seed)  # noqa: E731
        if config.quick:
            return cls(problems=(tanh,), depths=(5, 10, 20, 40))
        return cls(problems=(tanh, lambda: conv(16, 8, 64, seed=config.seed)))


def deq_model(problem: Problem, depth: int, solver: str) -> Callable[[], torch.Tensor]:
    deq = eq.DEQ(
        problem.cell,
        solver,
        tol=0.0,
        max_iter=depth,
        patience=None,
        on_failure="ignore",
        backward=eq.Implicit(tol=0.0, max_iter=depth),
    )
    return lambda: deq(problem.x)


def explicit_model(problem: Problem, depth: int) -> Callable[[], torch.Tensor]:
    def forward() -> torch.Tensor:
        z = problem.z0()
        for _ in range(depth):
            z = problem.cell(z, problem.x)
        return z

    return forward


def measure(problem: Problem, forward: Callable[[], torch.Tensor], device: torch.device) -> dict:
    """Saved activation bytes, peak tensor bytes and peak RSS rise of one training step."""

    def step() -> None:
        problem.zero_grad()
        problem.loss(forward()).backward()

    step()  # warm-up: parameter gradients and allocator pools exist before measuring
    problem.zero_grad()
    with SavedTensorBytes(exclude=problem.cell.parameters()) as saved:
        out = forward()
    del out
    peak = peak_tensor_bytes(step, device)
    rss = peak_rss_bytes(step) if device.type == "cpu" else None
    return {
        "saved_mb": saved.bytes / 2**20,
        "peak_mb": None if peak is None else peak / 2**20,
        "rss_mb": None if rss is None else rss / 2**20,
    }


def spread(values: list[float]) -> float:
    """(max - min) / min."""
    return (max(values) - min(values)) / min(values)


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Slope and coefficient of determination R^2 of a least-squares line."""
    x = torch.tensor(xs, dtype=torch.float64)
    y = torch.tensor(ys, dtype=torch.float64)
    xc, yc = x - x.mean(), y - y.mean()
    slope = float((xc * yc).sum() / (xc * xc).sum())
    residual = yc - slope * xc
    total = float((yc * yc).sum())
    r2 = 1.0 - float((residual * residual).sum()) / total if total > 0 else 0.0
    return slope, r2


COLUMNS = [
    Column("problem", "problem"),
    Column("model", "model"),
    Column("depth", "depth"),
    Column("saved_mb", "saved for backward MB", ".3f"),
    Column("peak_mb", "peak tensor MB", ".3f"),
    Column("rss_mb", "peak RSS rise MB", ".1f"),
]


def _checks(table: Table, problem: str, depths: tuple[int, ...]) -> list[Check]:
    rows = [r for r in table.rows if r["problem"] == problem]
    checks = []
    for key, what in (("saved_mb", "saved-for-backward bytes"), ("peak_mb", "peak tensor memory")):
        deq = [r[key] for r in rows if r["model"] == "DEQ" and r["depth"] >= FLAT_FROM]
        exp = [(r["depth"], r[key]) for r in rows if r["model"] == "explicit"]
        if len(deq) < 2 or None in deq or None in (y for _, y in exp):
            continue
        flat = spread(deq)
        slope, r2 = linear_fit([d for d, _ in exp], [y for _, y in exp])
        checks.append(
            Check(
                f"{problem}: DEQ {what} flat within {FLAT_TOLERANCE:.0%} from depth {FLAT_FROM} "
                f"to {max(depths)}",
                f"spread {flat:.2%}",
                flat <= FLAT_TOLERANCE,
            )
        )
        checks.append(
            Check(
                f"{problem}: explicit net's {what} grows linearly with depth",
                f"{slope * 1024:.1f} KiB per step, R^2 {r2:.4f}",
                slope > 0 and r2 >= LINEAR_R2,
            )
        )
    return checks


def _deq_growth_note(table: Table, problem: Problem) -> str:
    """What the DEQ's small growth with depth is: the residual traces of its two solves."""
    rows = [r for r in table.rows if r["problem"] == problem.name and r["model"] == "DEQ"]
    peaks = [(r["depth"], r["peak_mb"]) for r in rows if r["peak_mb"] is not None]
    if len(peaks) < 2:
        return f"{problem.name}: no peak measurements to fit."
    slope, _ = linear_fit([d for d, _ in peaks], [m for _, m in peaks])
    # abs and rel residual per sample per iteration, in the forward and the adjoint solve
    traces = 2 * 2 * problem.batch * problem.upstream.element_size()
    return (
        f"{problem.name}: the DEQ's peak tensor memory grows by {slope * 2**20:.0f} bytes per "
        f"iteration; the residual traces its two solves keep (abs and rel, one value per sample "
        f"per iteration) are {traces} bytes per iteration. Nothing state-sized grows."
    )


def run(config: BenchConfig, settings: Settings | None = None) -> Section:
    s = settings or Settings.for_config(config)
    device = config.torch_device
    section = Section(
        name="memory",
        title="Training memory against depth",
        summary=(
            f"A training step (forward, loss, backward) of the DEQ ({s.solver}, exactly k "
            "evaluations forward and k backward, implicit gradient) and of an explicit weight-"
            "tied network applying the same cell k times. 'Saved for backward' counts each "
            "stored activation once (parameters excluded); 'peak tensor' is the most tensor "
            "memory alive at once above the level before the step; 'peak RSS rise' is how far "
            "the process's resident memory rose during the step."
        ),
        settings={"depths": ", ".join(map(str, s.depths)), "solver": s.solver},
    )
    table = Table("Memory of one training step", COLUMNS)
    panels: dict[str, dict[str, tuple[list[float], list[float]]]] = {
        "saved_mb": {},
        "peak_mb": {},
    }
    for make_problem in s.problems:
        problem = make_problem().to(device)
        section.notes.append(f"{problem.name}: {problem.description}.")
        for model in ("DEQ", "explicit"):
            for depth in s.depths:
                forward = (
                    deq_model(problem, depth, s.solver)
                    if model == "DEQ"
                    else explicit_model(problem, depth)
                )
                row = measure(problem, forward, device)
                table.add(problem=problem.name, model=model, depth=depth, **row)
                for key, lines in panels.items():
                    if row[key] is not None:
                        xs, ys = lines.setdefault(f"{model}, {problem.name}", ([], []))
                        xs.append(depth)
                        ys.append(row[key])
        section.checks += _checks(table, problem.name, s.depths)
        section.notes.append(_deq_growth_note(table, problem))
    section.tables.append(table)
    path = line_plot(
        config.out / "memory.png",
        [
            ("Saved for backward", "MB", panels["saved_mb"]),
            ("Peak tensor memory", "MB", panels["peak_mb"]),
        ],
        xlabel="depth (solver evaluations / unrolled applications)",
    )
    section.figures.append(Figure(path.name, "Training memory against depth: DEQ vs explicit"))
    if device.type == "cuda":
        section.notes.append("The RSS meter is for CPU runs; on CUDA the peak is the allocator's.")
    return section


register("memory", "Training memory against depth", order=20)(run)
