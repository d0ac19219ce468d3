"""How close the solvers come to the physical limit: NFE cell calls and nothing else.

The overhead ratio of a forward solve is its time over the time of the same number of bare
cell calls (z <- f(z), nothing else), timed interleaved with it. For a training step the bare
work is those forward calls, one cell application with autograd, the adjoint solve's
vector-Jacobian products and the final backward pass; one minus their share is the part of the
step spent outside the cell (solver arithmetic, bookkeeping, Python).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

import equilibria as eq

from ..bare import bare_forward, bare_step
from ..config import BenchConfig
from ..problems import Problem, conv, slow_tanh
from ..registry import register
from ..report import Check, Column, Section, Table
from ..solver_sets import classical_solvers
from ..timing import Stopwatch, interleaved
from ..traffic import needed_bytes_per_entry, streaming_bandwidth

RATIO_TARGET = 1.15
PICARD_RATIO_TARGET = 1.05  # the plain iteration adds nothing but the loop to the cell calls
LOOP_SHARE_TARGET = 0.05  # the shared loop's time per evaluation over the cell's
TRAFFIC_TARGET = 1.5  # a solver's step time over its memory-traffic floor
BANDWIDTH_COPY_VECTORS = 5  # the copy that measures bandwidth: this many float64 states
EXPENSIVE_CELL_MS = 1.0  # the targets apply to cells costing at least this much


@dataclass(frozen=True)
class Settings:
    problems: tuple[Callable[[], Problem], ...]
    solvers: tuple[str, ...] = field(default_factory=classical_solvers)
    tol: float = 1e-5
    stop_mode: str = "rel"
    max_iter: int = 200
    repeats: int = 7
    warmup: int = 1

    @classmethod
    def for_config(cls, config: BenchConfig) -> Settings:
        seed = config.seed
        if config.quick:
            return cls(
                problems=(
                    lambda: slow_tanh(256, 64, seed=seed),
                    lambda: conv(16, 8, 64, seed=seed),
                ),
                repeats=5,
            )
        return cls(
            problems=(
                lambda: slow_tanh(256, 64, seed=seed),
                lambda: slow_tanh(512, 64, seed=seed),
                lambda: slow_tanh(1024, 64, seed=seed),
                lambda: conv(16, 8, 64, seed=seed),
                lambda: conv(16, 16, 64, seed=seed),
            )
        )


class TimedSolver(eq.Solver):
    """A solver whose `step` calls add up on a stopwatch, less the time of the evaluations of
    f made inside them (a safeguard's or a line search's, timed by `cell`): those count as the
    cell's."""

    def __init__(self, inner: eq.Solver, watch: Stopwatch, cell: Stopwatch) -> None:
        self.inner = inner
        self.name = inner.name
        self.watch = watch
        self.cell = cell
        self.nested = 0.0  # cell seconds spent inside steps

    def init(self, z: torch.Tensor, fz: torch.Tensor, g: torch.Tensor) -> Any:
        return self.inner.init(z, fz, g)

    def step(self, f: Any, z: torch.Tensor, fz: torch.Tensor, g: torch.Tensor, state: Any) -> Any:
        before = self.cell.seconds
        with self.watch:
            step = self.inner.step(f, z, fz, g, state)
        self.nested += self.cell.seconds - before
        return step


def breakdown(problem: Problem, solver: str, s: Settings, config: BenchConfig) -> dict:
    """Median time per evaluation in the cell, in the solver's step and in the shared loop."""
    samples: dict[str, list[float]] = {"cell": [], "step": [], "loop": []}
    device, clock = config.torch_device, config.clock
    for _ in range(s.repeats):
        total, in_cell, in_step = (Stopwatch(device, clock) for _ in range(3))
        timed = TimedSolver(eq.make_solver(solver), in_step, in_cell)

        def f(z: torch.Tensor, in_cell: Stopwatch = in_cell) -> torch.Tensor:
            with in_cell:
                return problem.f(z)

        with torch.no_grad(), total:
            nfe = eq.solve(
                f,
                problem.z0(),
                timed,
                tol=s.tol,
                max_iter=s.max_iter,
                stop_mode=s.stop_mode,
                on_failure="ignore",
            ).nfe
        samples["cell"].append(in_cell.seconds / nfe)
        step_seconds = in_step.seconds - timed.nested
        samples["step"].append(step_seconds / nfe)
        samples["loop"].append((total.seconds - in_cell.seconds - step_seconds) / nfe)
    return {f"{key}_us": statistics.median(v) * 1e6 for key, v in samples.items()}


def traffic_columns(
    problem: Problem, solver: str, nfe: int, step_us: float, bandwidth: float
) -> dict:
    """The step's memory-traffic floor (bytes it must move / streaming bandwidth) and the
    step's time over it (None for a step with no traffic to speak of, like plain iteration)."""
    itemsize = problem.upstream.element_size()
    per_entry = needed_bytes_per_entry(eq.make_solver(solver), itemsize, nfe)
    if not per_entry:
        return {"floor_us": None, "traffic_ratio": None}
    floor_us = per_entry * problem.batch * problem.features / bandwidth * 1e6
    return {"floor_us": floor_us, "traffic_ratio": step_us / floor_us}


def measure(
    problem: Problem, solver: str, s: Settings, config: BenchConfig, bandwidth: float
) -> dict:
    settings = dict(tol=s.tol, max_iter=s.max_iter, stop_mode=s.stop_mode, on_failure="ignore")
    deq = eq.DEQ(problem.cell, solver, backward=eq.Implicit(solver), **settings)

    def solve() -> eq.Solution:
        with torch.no_grad():
            return eq.solve(problem.f, problem.z0(), solver, **settings)

    def step() -> None:
        problem.zero_grad()
        problem.loss(deq(problem.x)).backward()

    nfe = solve().nfe
    step()
    forward_nfe, backward_nfe = deq.stats.forward_nfe, deq.stats.backward_nfe
    forward = interleaved(
        {"solve": solve, "bare": bare_forward(problem, nfe)},
        repeats=s.repeats,
        warmup=s.warmup,
        **config.timing(),
    )
    training = interleaved(
        {"step": step, "bare": bare_step(problem, forward_nfe, backward_nfe)},
        repeats=s.repeats,
        warmup=s.warmup,
        **config.timing(),
    )
    per_iteration = (forward.median("solve") - forward.median("bare")) / nfe
    parts = breakdown(problem, solver, s, config)
    return {
        "problem": problem.name,
        "solver": solver,
        "cell_ms": forward.median("bare") / nfe * 1e3,
        "nfe": nfe,
        "solve_ms": forward.median("solve") * 1e3,
        "ratio": forward.ratio("solve", "bare"),
        "per_iteration_us": per_iteration * 1e6,
        "per_entry_ns": per_iteration / (problem.batch * problem.features) * 1e9,
        "step_nfe": f"{forward_nfe}+{backward_nfe}",
        "step_ms": training.median("step") * 1e3,
        "step_ratio": training.ratio("step", "bare"),
        "outside": 1.0 - 1.0 / training.ratio("step", "bare"),
        **parts,
        "loop_share": parts["loop_us"] / parts["cell_us"],
        **traffic_columns(problem, solver, nfe, parts["step_us"], bandwidth),
    }


COLUMNS = [
    Column("problem", "problem"),
    Column("solver", "solver"),
    Column("cell_ms", "cell call ms", ".3f"),  # median of NFE bare calls / NFE
    Column("nfe", "fwd NFE"),
    Column("solve_ms", "solve ms", ".2f"),
    Column("ratio", "overhead ratio", ".3f"),
    Column("per_iteration_us", "overhead per evaluation us", ".0f"),
    Column("per_entry_ns", "same, ns per state entry", ".2f"),
    Column("cell_us", "per evaluation: cell us", ".0f"),
    Column("step_us", "solver step us", ".0f"),
    Column("loop_us", "shared loop us", ".0f"),
    Column("loop_share", "loop / cell", ".1%"),
    Column("floor_us", "step traffic floor us", ".0f"),
    Column("traffic_ratio", "step / floor", ".2f"),
    Column("step_nfe", "step NFE fwd+bwd"),
    Column("step_ms", "training step ms", ".2f"),
    Column("step_ratio", "step / bare cell work", ".3f"),
    Column("outside", "step share outside the cell", ".1%"),
]


def checks(rows: list[dict]) -> list[Check]:
    """The targets on cells costing at least EXPENSIVE_CELL_MS (on cheaper cells the fixed
    cost of an iteration dominates; the per-entry note says what it is)."""
    expensive = [r for r in rows if r["cell_ms"] >= EXPENSIVE_CELL_MS]
    scope = f"for cells costing >= {EXPENSIVE_CELL_MS:g} ms"
    if not expensive:
        return [Check(f"overhead targets {scope}", "no problem in this run has such a cell", None)]
    picard = [r for r in expensive if r["solver"] == "picard"]
    modelled = [r for r in expensive if r["traffic_ratio"] is not None]
    return [
        _check(f"overhead ratio <= {RATIO_TARGET} {scope}", expensive, "ratio", RATIO_TARGET),
        _check(
            f"picard overhead ratio <= {PICARD_RATIO_TARGET} {scope}",
            picard,
            "ratio",
            PICARD_RATIO_TARGET,
        ),
        _check(
            f"shared loop <= {LOOP_SHARE_TARGET:.0%} of the cell's time per evaluation {scope}",
            expensive,
            "loop_share",
            LOOP_SHARE_TARGET,
            ".1%",
        ),
        _check(
            f"solver step within {TRAFFIC_TARGET}x of its memory-traffic floor {scope}",
            modelled,
            "traffic_ratio",
            TRAFFIC_TARGET,
        ),
    ]


def _check(name: str, rows: list[dict], key: str, bound: float, spec: str = ".3f") -> Check:
    """Whether `row[key] <= bound` on every row, with the count and the worst row."""
    if not rows:
        return Check(name, "no row to judge in this run", None)
    missed = [r for r in rows if r[key] > bound]
    worst = max(rows, key=lambda r: r[key])
    measured = (
        f"{len(rows) - len(missed)}/{len(rows)} rows; highest {format(worst[key], spec)} "
        f"({worst['solver']} on {worst['problem']})"
    )
    return Check(name, measured, not missed)


def run(config: BenchConfig, settings: Settings | None = None) -> Section:
    s = settings or Settings.for_config(config)
    section = Section(
        name="overhead",
        title="Solver overhead against the cell's own cost",
        summary=(
            "Overhead ratio = time of a forward solve / time of the same number of bare cell "
            "calls (z <- f(z)), the median of per-round ratios from interleaved runs; 1.0 is "
            "the physical limit. 'step / bare cell work' compares a whole training step "
            "(implicit backward) with its cell work alone (the same forward calls, one "
            "application with autograd, the same number of vector-Jacobian products and the "
            "final backward pass). The overhead per evaluation is (solve - bare) / NFE; divided "
            "by the number of state entries (batch x features) it tells how much work per "
            "entry a cell must do for a given ratio. The last three columns split an "
            "instrumented solve per evaluation into the cell, the solver's own step and the "
            "loop every solver shares (residuals, best iterate, stopping checks); 'loop / cell' "
            "is the loop's share of the cell's time. The step's traffic floor is the memory "
            "its algorithm must move per step (benchmarks/traffic.py says what is counted) at "
            "the streaming bandwidth of a large copy measured in the same run."
        ),
        settings={
            "tolerance": f"{s.stop_mode} {s.tol:g} (forward and backward)",
            "cap": f"{s.max_iter} evaluations",
            "timing": f"{s.warmup} warm-up + {s.repeats} interleaved rounds",
        },
    )
    table = Table("Overhead per solver and problem size", COLUMNS)
    bandwidths = []
    for make_problem in s.problems:
        problem = make_problem().to(config.torch_device)
        section.notes.append(f"{problem.name}: {problem.description}.")
        # a copy the size of an Anderson history: out of cache, as a step's history is
        size = BANDWIDTH_COPY_VECTORS * problem.batch * problem.features * 8
        bandwidth = streaming_bandwidth(size, config.torch_device, config.clock)
        bandwidths.append(bandwidth)
        for solver in s.solvers:
            table.add(**measure(problem, solver, s, config, bandwidth))
    section.settings["streaming bandwidth"] = (
        f"{min(bandwidths) / 1e9:.1f}-{max(bandwidths) / 1e9:.1f} GB/s (a large copy, read + "
        "write, median of 7)"
    )
    section.tables.append(table)
    section.checks += checks(table.rows)
    section.notes.append(per_entry_note(table.rows))
    section.notes.append(fixed_cost_note(config, s))
    return section


def per_entry_note(rows: list[dict]) -> str:
    """The overhead per state entry of each solver, and the cell work it takes to hide it."""
    parts = []
    for solver in dict.fromkeys(r["solver"] for r in rows):
        values = sorted(r["per_entry_ns"] for r in rows if r["solver"] == solver)
        median = values[len(values) // 2]
        need = median / (RATIO_TARGET - 1)
        parts.append(
            f"{solver} {median:.2f} ns per state entry per evaluation (median over sizes; a "
            f"cell must spend >= {need:.0f} ns per entry for a ratio <= {RATIO_TARGET})"
        )
    return "Solver overhead: " + "; ".join(parts) + "."


register("overhead", "Solver overhead against the cell's own cost", order=30)(run)


def fixed_cost_note(config: BenchConfig, s: Settings) -> str:
    """What an iteration costs on a state too small to matter: the loop's fixed cost."""
    batch, features, iterations = 64, 16, 200
    x = torch.randn(batch, features, device=config.torch_device)

    def f(z: torch.Tensor) -> torch.Tensor:
        return -0.9 * z + x

    def solve() -> None:
        with torch.no_grad():
            eq.solve(f, torch.zeros_like(x), "picard", tol=0.0, max_iter=iterations,
                     patience=None, on_failure="ignore")  # fmt: skip

    def bare() -> None:
        z = torch.zeros_like(x)
        for _ in range(iterations):
            z = f(z)

    timings = interleaved(
        {"solve": solve, "bare": bare}, repeats=s.repeats, warmup=s.warmup, **config.timing()
    )
    per_iteration = (timings.median("solve") - timings.median("bare")) / iterations * 1e6
    return (
        f"Fixed cost of the shared loop: {per_iteration:.0f} us per iteration on a {batch}x"
        f"{features} state (picard, {iterations} iterations, less the bare calls): the "
        "host-side bookkeeping of per-sample residuals, best residuals and stopping, one "
        "synchronization, and the three passes over the state every evaluation needs (g = "
        "f(z) - z and the norms of g and f(z)). On a cell cheaper than about 1 ms this, the "
        "solver's own step (Anderson: its float64 Gram row and mix over m stored vectors; "
        "Broyden: its stored updates) and the per-entry cost above are what remains."
    )
