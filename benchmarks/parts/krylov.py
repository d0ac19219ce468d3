"""Newton-Krylov and GMRES against the fixed-point solvers: evaluations and time to a tolerance.

Forward: every solver of `eq.SOLVERS` that solves nonlinear problems, from z0 = 0 to each
relative tolerance on four cells: a slow tanh cell; the MDEQ cell of a model trained by the
default `equilibria train` run; the MDEQ cell at initialization (the solvers part's problem,
whose slow modes make it much harder); the DEQ-Transformer block of a small language model
trained on text. Adjoint: the implicit backward's equation solved by Anderson and by GMRES at
the same tolerances, from the same fixed point. NFE counts evaluations of f, plus
Jacobian-vector products for Newton (one each); in the adjoint every evaluation is one
vector-Jacobian product.
"""

from __future__ import annotations

import math
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import equilibria as eq
from equilibria.state import describe

from ..config import BenchConfig
from ..datasets import SHAKESPEARE, text_overrides
from ..frozen import Sampling, load_frozen
from ..problems import Problem, mdeq, slow_tanh
from ..registry import register
from ..report import Check, Column, Section, Table
from ..solver_sets import nonlinear_solvers
from ..timing import Clock, time_once
from ..train_runs import IMPLICIT_RECIPE, PREVIOUS_IMAGE_BATCH, TRAINING_MODULES, train_model

# the models are trained with the recipe the tables were measured with (the cap of 8 included:
# the language model's own cap is now 10; the batch of 32: image classifiers' is now 64)
TRAINING_RECIPE = (*IMPLICIT_RECIPE, "deq.max_iter=8", PREVIOUS_IMAGE_BATCH)
HEADLINE_CASE = "trained MDEQ"
HEADLINE_TARGET = 1e-6
HEADLINE_RATIO = 0.5  # the best of newton / gmres over Anderson's evaluations
# the adjoint's solvers by label; a longer GMRES cycle keeps more of the Krylov space
ADJOINT_SOLVERS: dict[str, str | eq.Solver] = {
    "anderson": "anderson",
    "gmres": "gmres",
    "gmres, restart 40": eq.GMRES(restart=40),
}
INIT_CASE = "MDEQ at initialization"


@dataclass(frozen=True)
class Settings:
    """What the part trains and measures.

    Attributes:
        targets: relative residuals each solve must reach.
        cap: the most evaluations a solve may use (forward and adjoint alike).
        repeats: timed solves per row (after one untimed warm-up); the median is reported.
        batch: samples per solve.
        digits_overrides: `equilibria train` overrides of the MDEQ run (empty: the default).
        lm_overrides: `equilibria train` overrides of the language model.
    """

    targets: tuple[float, ...] = (1e-4, 1e-6)
    cap: int = 400
    repeats: int = 3
    batch: int = 32
    digits_overrides: tuple[str, ...] = ()
    lm_overrides: tuple[str, ...] = (
        "--task",
        "lm",
        "lm.seq_len=64",
        "lm.width=64",
        "lm.heads=4",
        "data.batch_size=16",
        "optim.epochs=4",
        "lm.steps_per_epoch=100",
        "lm.eval_chars=2048",
    )

    @classmethod
    def for_config(cls, config: BenchConfig) -> Settings:
        if not config.quick:
            return cls()
        return cls(
            targets=(1e-4,),
            cap=150,
            repeats=1,
            batch=8,
            digits_overrides=("optim.epochs=1", "data.train_samples=256", "run.sweep=1"),
            lm_overrides=(
                "--task",
                "lm",
                "lm.seq_len=16",
                "lm.width=16",
                "lm.heads=2",
                "optim.epochs=1",
                "lm.steps_per_epoch=3",
                "lm.eval_chars=128",
            ),
        )


@dataclass
class Case:
    """One fixed-point problem: f(z) closing over a cell and its input, and where to start."""

    name: str
    description: str
    f: Callable[[Any], Any]
    z0: Any
    parameters: list[torch.Tensor]
    upstream: Any  # the gradient arriving at z*, shaped like the state


def _random_like(state: Any, seed: int) -> Any:
    gen = torch.Generator().manual_seed(seed)
    parts = (state,) if isinstance(state, torch.Tensor) else tuple(state)
    drawn = [torch.randn(p.shape, generator=gen, dtype=p.dtype) / p.shape[0] for p in parts]
    return drawn[0] if isinstance(state, torch.Tensor) else type(state)(drawn)


def problem_case(problem: Problem, name: str | None = None) -> Case:
    """A benchmark problem (a cell with its input and upstream gradient) as a case."""
    return Case(
        name or problem.name,
        problem.description,
        problem.f,
        problem.z0(),
        list(problem.cell.parameters()),
        problem.upstream,
    )


def trained_case(name: str, path: Path, settings: Settings, seed: int, task: str) -> Case:
    """The DEQ layer of a trained checkpoint on held-out inputs (eval mode)."""
    frozen = load_frozen(
        path, Sampling(task=task, train_batches=1, batch_size=settings.batch, test_batches=1)
    )
    deq, x = frozen.deq, frozen.test_inputs[0]
    z0 = deq.initial_state(x)
    return Case(
        name,
        f"the DEQ layer of a trained {frozen.parameters:,}-parameter model on held-out inputs; "
        f"state {describe(z0)}",
        lambda z: deq.cell(z, x),
        z0,
        [p for p in deq.cell.parameters() if p.requires_grad],
        _random_like(z0, seed),
    )


def forward_row(
    case: Case, solver: str, target: float, s: Settings, clock: Clock
) -> dict[str, Any]:
    def run() -> eq.Solution:
        with torch.no_grad():
            return eq.solve(
                case.f, case.z0, solver, tol=target, max_iter=s.cap, patience=None,
                on_failure="ignore",
            )  # fmt: skip

    solution = run()  # warm-up, and the counts (deterministic)
    seconds = [time_once(run, torch.device("cpu"), clock) for _ in range(s.repeats)]
    return row(case, solver, target, solution, seconds)


def row(
    case: Case, solver: Any, target: float, solution: eq.Solution, seconds: list[float]
) -> dict[str, Any]:
    """A table row: what one solve counted and reached, and its median time."""
    return {
        "case": case.name,
        "solver": solver,
        "target": target,
        "nfe": solution.nfe,
        "converged": float(solution.converged.float().mean()),
        "worst": float(solution.rel_residual.max()),
        "ms": 1000 * statistics.median(seconds),
    }


def adjoint_row(
    case: Case, solver: str | eq.Solver, target: float, s: Settings, clock: Clock
) -> dict[str, Any]:
    """The implicit backward with `solver` on the adjoint, from a forward solved 10x tighter."""
    backward = eq.Implicit(solver, tol=target, max_iter=s.cap)

    def forward() -> eq.Solution:
        return eq.solve(
            case.f, case.z0, "anderson", tol=target / 10, max_iter=s.cap, patience=None,
            on_failure="ignore", backward=backward,
        )  # fmt: skip

    def gradient(solution: eq.Solution) -> None:
        outputs = solution.z if isinstance(solution.z, torch.Tensor) else tuple(solution.z)
        torch.autograd.grad(outputs, case.parameters, case.upstream)

    seconds = []
    solution = forward()
    gradient(solution)  # warm-up, and the counts
    adjoint = solution.backward
    for _ in range(s.repeats):
        fresh = forward()
        seconds.append(time_once(lambda fresh=fresh: gradient(fresh), torch.device("cpu"), clock))
    forward_converged = float(solution.converged.float().mean())
    return {**row(case, solver, target, adjoint, seconds), "forward_converged": forward_converged}


COLUMNS = [
    Column("case", "cell"),
    Column("solver", "solver"),
    Column("target", "rel tol", "g"),
    Column("nfe", "NFE"),
    Column("converged", "samples converged", ".0%"),
    Column("worst", "worst rel residual", ".1e"),
    Column("ms", "ms", ".1f"),
]


def headline_check(forward: Table, adjoint: Table, case: str) -> Check:
    """At the headline tolerance on `case`: the best of the newton (forward) and gmres
    (adjoint) rows over Anderson's evaluations for the same solve; unconverged rows get no
    credit."""
    found: dict[str, float] = {}
    ratios: dict[str, float] = {}
    for table, kinds in ((forward, ("newton",)), (adjoint, ("gmres",))):
        rows = [r for r in table.rows if (r["case"], r["target"]) == (case, HEADLINE_TARGET)]
        anderson = next((r for r in rows if r["solver"] == "anderson"), None)
        for row in rows:
            if anderson is None or not row["solver"].startswith(kinds):
                continue
            label = f"{row['solver']}: {row['nfe']} vs Anderson {anderson['nfe']} NFE"
            if row["converged"] == 1.0:
                ratios[label] = row["nfe"] / anderson["nfe"]
            found[label] = ratios.get(label, math.nan)
    measured = "; ".join(
        f"{label} ({ratio:.2f}x)" if label in ratios else f"{label} (did not converge)"
        for label, ratio in found.items()
    )
    return Check(
        f"{case} at rel {HEADLINE_TARGET:g}: the best of newton (forward) and gmres (adjoint) "
        f"needs at most {HEADLINE_RATIO}x Anderson's evaluations",
        measured or "not measured",
        (min(ratios.values()) <= HEADLINE_RATIO) if ratios else None,
    )


def train(out: Path, overrides: tuple[str, ...]) -> Path:
    """The checkpoint of an `equilibria train` run with these overrides, on one thread."""
    return train_model(out, ("run.threads=1", *TRAINING_RECIPE, *overrides))


@register(
    "krylov",
    "Newton-Krylov and GMRES: evaluations and time to a tolerance",
    order=50,
    requires=TRAINING_MODULES,
)
def run(config: BenchConfig) -> Section:
    s = Settings.for_config(config)
    torch.manual_seed(config.seed)
    with tempfile.TemporaryDirectory(prefix="krylov-") as scratch:
        trained_mdeq = train(Path(scratch) / "mdeq", s.digits_overrides)
        lm = train(Path(scratch) / "lm", (*s.lm_overrides, *text_overrides()))
        cases = [
            problem_case(slow_tanh(256, s.batch, seed=config.seed)),
            trained_case(HEADLINE_CASE, trained_mdeq, s, config.seed, "classify"),
            problem_case(mdeq((24, 24), 8, s.batch, seed=config.seed), INIT_CASE),
            trained_case("trained DEQ-Transformer", lm, s, config.seed, "lm"),
        ]
        forward = Table("Forward solves from z0 = 0", COLUMNS)
        adjoint = Table(
            "Adjoint solves (implicit backward) from the same fixed point",
            [*COLUMNS, Column("forward_converged", "forward converged", ".0%")],
        )
        for case in cases:
            for target in s.targets:
                for solver in nonlinear_solvers():
                    forward.add(**forward_row(case, solver, target, s, config.clock))
                for label, solver in ADJOINT_SOLVERS.items():
                    row = adjoint_row(case, solver, target, s, config.clock)
                    adjoint.add(**{**row, "solver": label})
    section = Section("krylov", "Newton-Krylov and GMRES: evaluations and time to a tolerance")
    section.summary = __doc__.split("\n\n", 1)[1].replace("\n", " ").strip()
    section.settings = {
        "tolerances (relative)": ", ".join(f"{t:g}" for t in s.targets),
        "cap": f"{s.cap} evaluations",
        "batch": str(s.batch),
        "threads": str(config.threads),
        "timing": f"median of {s.repeats} solves after one warm-up ({config.clock_name} clock)",
        "training recipe (both runs)": " ".join(TRAINING_RECIPE),
        "MDEQ run": "`equilibria train " + " ".join(s.digits_overrides) + "`",
        "language model run": "`equilibria train "
        + " ".join(s.lm_overrides)
        + "`"
        + (" on Tiny Shakespeare" if SHAKESPEARE.is_file() else " on the bundled pydoc text"),
    }
    section.tables += [forward, adjoint]
    section.checks += [headline_check(forward, adjoint, c) for c in (HEADLINE_CASE, INIT_CASE)]
    section.notes += [f"{case.name}: {case.description}" for case in cases]
    return section
