"""Gradient strategies: implicit, phantom, one-step (and unrolled as a reference).

For each strategy: the time of a training step (interleaved with the others) and the cosine
between its parameter gradient and the exact one. The exact gradient comes from float64 dense
linear algebra, independent of every solver: the fixed point is solved to 1e-12, each sample's
Jacobian J = df/dz is formed with torch.func, the adjoint (I - J)^T y = upstream is solved
directly, and y is pulled back through one cell application to the parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

import equilibria as eq

from ..config import BenchConfig
from ..problems import Problem, conv, slow_tanh
from ..registry import register
from ..report import Check, Column, Section, Table
from ..timing import interleaved

AGREEMENT = 1e-4  # implicit and unrolled cosines to the exact gradient may differ by this
SWEEP = (1e-4, 1e-5, 1e-6, 1e-7)  # tolerances of the implicit accuracy sweep


@dataclass(frozen=True)
class Settings:
    problems: tuple[Callable[[], Problem], ...]
    strategies: tuple[tuple[str, eq.Backward], ...] = (
        ("implicit", eq.Implicit("anderson")),
        ("phantom (5 steps, tau 0.6)", eq.Phantom(steps=5, tau=0.6)),
        ("one-step", eq.OneStep()),
        ("unrolled (reference)", eq.Unrolled()),
    )
    solver: str = "anderson"
    tol: float = 1e-5
    stop_mode: str = "rel"
    max_iter: int = 200
    repeats: int = 7
    warmup: int = 1

    @classmethod
    def for_config(cls, config: BenchConfig) -> Settings:
        seed = config.seed
        if config.quick:
            return cls(problems=(lambda: slow_tanh(128, 32, seed=seed),), repeats=5)
        return cls(
            problems=(lambda: slow_tanh(256, 64, seed=seed), lambda: conv(16, 8, 16, seed=seed))
        )


def exact_gradient(problem: Problem) -> torch.Tensor:
    """The parameters' exact gradient of (z* . upstream), in float64, by dense linear algebra."""
    p = problem.to(problem.x.device, torch.float64)
    with torch.no_grad():
        z = eq.solve(
            p.f, p.z0(), "anderson", tol=1e-12, stop_mode="rel", max_iter=2000, patience=None
        ).z

    def one_sample(zb: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
        return p.cell(zb.unsqueeze(0), xb.unsqueeze(0)).squeeze(0)

    jacobian = torch.func.vmap(torch.func.jacrev(one_sample))(z, p.x)
    batch, features = p.batch, p.features
    jacobian = jacobian.reshape(batch, features, features)
    eye = torch.eye(features, dtype=torch.float64, device=z.device)
    adjoint = torch.linalg.solve(
        (eye - jacobian).transpose(1, 2), p.upstream.reshape(batch, features, 1)
    )
    fz = p.f(z)
    grads = torch.autograd.grad(fz, list(p.cell.parameters()), adjoint.reshape_as(fz))
    return torch.cat([g.flatten() for g in grads])


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=0))


COLUMNS = [
    Column("problem", "problem"),
    Column("strategy", "gradient"),
    Column("cosine", "cosine to exact", ".6f"),
    Column("step_ms", "training step ms", ".2f"),
    Column("relative", "time / implicit", ".2f"),
    Column("backward_nfe", "adjoint solve NFE"),
]


SWEEP_COLUMNS = [
    Column("problem", "problem"),
    Column("tol", "tol (forward and backward)", ".0e"),
    Column("nfe", "NFE fwd+bwd"),
    Column("gap", "1 - cosine to exact", ".1e"),
]


def implicit_accuracy(problem: Problem, s: Settings, tol: float) -> dict:
    """The implicit gradient's cosine to the exact one when both solves use `tol`."""
    deq = eq.DEQ(
        problem.cell,
        s.solver,
        tol=tol,
        max_iter=s.max_iter,
        stop_mode=s.stop_mode,
        backward=eq.Implicit(s.solver),
        on_failure="ignore",
    )
    training_step(problem, deq)()
    return {
        "nfe": f"{deq.stats.forward_nfe}+{deq.stats.backward_nfe}",
        "gap": 1.0 - _cosine(problem.parameter_gradient(), problem_exact(problem)),
    }


_EXACT: dict[int, torch.Tensor] = {}


def problem_exact(problem: Problem) -> torch.Tensor:
    """`exact_gradient(problem)`, computed once per problem object."""
    if id(problem) not in _EXACT:
        _EXACT.clear()
        _EXACT[id(problem)] = exact_gradient(problem)
    return _EXACT[id(problem)]


def checks(table: Table) -> list[Check]:
    """Implicit differentiation must be as exact as backpropagating through the same solve."""
    found = []
    for problem in dict.fromkeys(table.column("problem")):
        rows = {r["strategy"]: r for r in table.rows if r["problem"] == problem}
        implicit = rows.get("implicit")
        unrolled = next((r for k, r in rows.items() if k.startswith("unrolled")), None)
        if implicit is None or unrolled is None:
            continue
        found.append(
            Check(
                f"{problem}: implicit gradient as close to exact as backpropagation through "
                f"the same solve (cosines within {AGREEMENT:g})",
                f"implicit {implicit['cosine']:.6f}, unrolled {unrolled['cosine']:.6f}",
                implicit["cosine"] >= unrolled["cosine"] - AGREEMENT,
            )
        )
    return found


def training_step(problem: Problem, deq: eq.DEQ) -> Callable[[], None]:
    def step() -> None:
        problem.zero_grad()
        problem.loss(deq(problem.x)).backward()

    return step


def measure(problem: Problem, s: Settings, config: BenchConfig, table: Table) -> None:
    """Add one row per strategy for `problem` to `table`."""
    exact = problem_exact(problem)
    steps, rows = {}, {}
    for label, backward in s.strategies:
        deq = eq.DEQ(
            problem.cell,
            s.solver,
            tol=s.tol,
            max_iter=s.max_iter,
            stop_mode=s.stop_mode,
            backward=backward,
            on_failure="ignore",
        )
        steps[label] = training_step(problem, deq)
        steps[label]()
        rows[label] = {
            "cosine": _cosine(problem.parameter_gradient(), exact),
            "backward_nfe": deq.stats.backward_nfe,
        }
    timings = interleaved(steps, repeats=s.repeats, warmup=s.warmup, **config.timing())
    reference = s.strategies[0][0]
    for label, _ in s.strategies:
        table.add(
            problem=problem.name,
            strategy=label,
            step_ms=timings.median(label) * 1e3,
            relative=timings.ratio(label, reference),
            **rows[label],
        )


def run(config: BenchConfig, settings: Settings | None = None) -> Section:
    s = settings or Settings.for_config(config)
    section = Section(
        name="gradients",
        title="Gradient strategies: time and accuracy",
        summary=(
            "One training step (forward solve, loss, backward) per strategy, timed interleaved; "
            "the cosine compares each strategy's parameter gradient with the exact implicit "
            "gradient from dense float64 linear algebra."
        ),
        settings={
            "forward": f"{s.solver}, {s.stop_mode} tol {s.tol:g}, cap {s.max_iter}",
            "implicit backward": "the forward's settings, Anderson on the adjoint",
            "timing": f"{s.warmup} warm-up + {s.repeats} interleaved rounds",
        },
    )
    table = Table("Gradient strategies", COLUMNS)
    sweep = Table("Implicit gradient against the solve tolerance", SWEEP_COLUMNS)
    for make_problem in s.problems:
        problem = make_problem().to(config.torch_device)
        section.notes.append(f"{problem.name}: {problem.description}.")
        measure(problem, s, config, table)
        for tol in SWEEP:
            sweep.add(problem=problem.name, tol=tol, **implicit_accuracy(problem, s, tol))
    section.tables.append(table)
    section.tables.append(sweep)
    section.checks += checks(table)
    section.notes.append(
        "Final accuracy on the digits task per strategy: the part `gradients-digits`."
    )
    return section


register("gradients", "Gradient strategies: time and accuracy", order=40)(run)
