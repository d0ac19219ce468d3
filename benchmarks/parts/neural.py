"""The learned solver against picard, anderson and broyden on a trained DEQ, held-out inputs.

Two models: the default multiscale DEQ trained on digits with `equilibria train` (every setting
at its default; the quick preset trains a smaller, shorter run), and a DEQ-Transformer character
language model (`--lm`: `equilibria train --task lm`, Tiny Shakespeare when available). The
model is frozen and a NeuralSolver is trained on its DEQ inputs (training images or text
windows; no labels). On held-out inputs (test images, validation text) we measure:

- residual vs NFE: each sample's best relative residual ||f(z) - z|| / ||f(z)|| after every
  evaluation of the cell (the safeguard's evaluations included), with the initializer's cost
  counted as a fraction of an evaluation (its FLOPs over the cell's);
- NFE and thread CPU time to reach a fixed relative residual (the solve stops when every sample
  of a batch is there), timed interleaved;
- the task metric at fixed NFE budgets (test accuracy, or validation bits per character; the
  model's own forward, as `equilibria eval` runs it);
- the adjoint (backward) solve's NFE to a fixed residual with each solver.

    python -m benchmarks neural neural-lm                     # in the suite (parts)
    python -m benchmarks.parts.neural [--out results/neural_solvers] [--quick] [--lm]
        [--checkpoint RUN/checkpoint.pt]                      # alone, on a given model
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

import equilibria as eq
from equilibria.lm.engine import LN2
from equilibria.neural import NeuralSolver, SolverTraining, fit_neural_solver
from equilibria.state import StateLayout

from ..config import BenchConfig
from ..datasets import text_overrides
from ..frozen import Frozen, Sampling, load_frozen
from ..plots import line_plot
from ..registry import register
from ..report import Check, Column, Figure, Section, Table
from ..residuals import best_residuals, evaluations_to
from ..solver_sets import classical_solvers
from ..timing import CLOCKS, interleaved
from ..train_runs import IMPLICIT_RECIPE, PREVIOUS_IMAGE_BATCH, train_model

NFE_TARGET = 2.0  # at least 2x fewer evaluations than the best classical solver
TIME_TARGET = 1.5  # and 1.5x less time
SIZE_TARGET = 0.03  # the solver is at most 3% of the model
CLASSICAL = classical_solvers()  # the baselines: picard, anderson, broyden


@dataclass(frozen=True)
class Settings:
    """What the benchmark trains and measures.

    Attributes:
        train_overrides: config overrides for `equilibria train` (by default the default run
            with the recipe the tables were measured with).
        solver_batches, batch_size: training inputs of the neural solver.
        training: the neural solver's training settings.
        init_width: hidden channels of its initializer.
        targets: relative residuals to reach; `headline` is the one the target is judged at.
        cap: most evaluations a solve may use on the way to a target.
        budgets: NFE budgets for the accuracy table.
        repeats: timed rounds (interleaved, after one warm-up round).
        test_batches: held-out batches measured (None: the whole test split).
    """

    train_overrides: tuple[str, ...] = (*IMPLICIT_RECIPE, PREVIOUS_IMAGE_BATCH)
    solver_batches: int = 12
    batch_size: int = 128
    training: SolverTraining = field(
        default_factory=lambda: SolverTraining(epochs=10, unroll=6, lr=3e-3, init_epochs=50)
    )
    init_width: int = 8
    targets: tuple[float, ...] = (1e-1, 1e-2, 1e-3)
    headline: float = 1e-3
    cap: int = 60
    budgets: tuple[int, ...] = (1, 2, 3, 4, 6, 8, 12)
    repeats: int = 5
    test_batches: int | None = None
    task: str = "classify"
    init_skip: bool = True

    @property
    def sampling(self) -> Sampling:
        """The inputs the frozen model comes with: solver training batches, held-out batches."""
        return Sampling(self.task, self.solver_batches, self.batch_size, self.test_batches)

    @classmethod
    def language(cls, quick: bool = False) -> Settings:
        """The DEQ-Transformer on Tiny Shakespeare (the bundled corpus when it is absent)."""
        model = (
            *text_overrides(),
            "lm.seq_len=256",
            "lm.width=176",
            "lm.heads=8",
            "data.batch_size=8",
            "optim.lr=0.002",
            "optim.epochs=5",
            "optim.label_smoothing=0",
            "lm.steps_per_epoch=100",
            "lm.eval_chars=8192",
            "deq.max_iter=6",
            *IMPLICIT_RECIPE,
            "deq.backward_max_iter=6",
            "deq.eval_max_iter=20",
        )
        if quick:  # the bundled corpus
            model = (
                "lm.seq_len=32",
                "lm.width=32",
                "lm.heads=2",
                "optim.epochs=1",
                "lm.steps_per_epoch=5",
                "lm.eval_chars=256",
            )
        return cls(
            train_overrides=("--task", "lm", "run.threads=1", *model),
            solver_batches=2 if quick else 8,
            batch_size=8 if quick else 16,
            training=SolverTraining(
                epochs=3 if quick else 10,
                unroll=4 if quick else 6,
                lr=3e-3,
                init_epochs=5 if quick else 50,
            ),  # fmt: skip
            init_width=16,
            targets=(1e-1, 1e-2) if quick else (1e-1, 1e-2, 1e-3),
            headline=1e-2 if quick else 1e-3,
            cap=30 if quick else 60,
            budgets=(1, 2, 4) if quick else (1, 2, 4, 6, 8, 12, 16, 24),
            repeats=1 if quick else 5,
            test_batches=1 if quick else 4,
            task="lm",
            init_skip=False,
        )

    @classmethod
    def quick(cls) -> Settings:
        return cls(
            train_overrides=(
                "model.channels=8,8",
                "model.expansion=2",
                "model.head_channels=16",
                "data.train_samples=256",
                "optim.epochs=2",
                "run.sweep=1,2",
                "run.trace_iters=3",
            ),
            solver_batches=2,
            batch_size=64,
            training=SolverTraining(epochs=3, unroll=4, lr=3e-3, init_epochs=5),
            targets=(1e-1, 1e-2),
            headline=1e-2,
            cap=30,
            budgets=(1, 2, 4),
            repeats=1,
            test_batches=1,
        )


def flops(fn: Callable[[], object]) -> int:
    """Floating-point operations of one call of `fn`, as torch's FLOP counter sees them."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        fn()
    return counter.get_total_flops()


def initializer_cost(neural: NeuralSolver, deq: eq.DEQ, x: torch.Tensor) -> float:
    """The initializer's FLOPs as a fraction of one cell evaluation."""
    z0 = deq.initial_state(x)
    return flops(lambda: neural.initial_state(x)) / flops(lambda: deq.cell(z0, x))


def solve_to(deq: eq.DEQ, xs: list[torch.Tensor], solver: Any, target: float, cap: int) -> list:
    """Solve every batch to `target` (rel); the NFE each batch took and whether all got there."""
    rows = []
    with torch.no_grad():
        for x in xs:
            z0 = deq.initial_state(x, solver if isinstance(solver, eq.Solver) else None)
            sol = eq.solve(
                lambda z, x=x: deq.cell(z, x), z0, solver, tol=target, max_iter=cap,
                on_failure="ignore",
            )  # fmt: skip
            rows.append((sol.nfe, bool(sol.converged.all())))
    return rows


def task_metric(frozen: Frozen, solver: Any, budget: int) -> float:
    """Test accuracy (classifier) or validation bits per character (language model) of the
    model's own forward with at most `budget` evaluations."""
    total = count = 0.0
    with torch.no_grad():
        for inputs, targets in frozen.test_batches:
            logits = frozen.model(inputs, solver=solver, max_iter=budget, tol=0.0)
            if frozen.task == "lm":
                loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum")
                total += float(loss) / LN2
            else:
                total += int((logits.argmax(1) == targets).sum())
            count += targets.numel()
    return total / count


def forward_all(frozen: Frozen, solver: Any, budget: int) -> None:
    """The model's forward on every held-out batch with at most `budget` evaluations (timed)."""
    with torch.no_grad():
        for inputs, _ in frozen.test_batches:
            frozen.model(inputs, solver=solver, max_iter=budget, tol=0.0)


def adjoint_nfe(frozen: Frozen, solver: Any, target: float, cap: int) -> list[int]:
    """NFE of the backward (adjoint) solve y = y J + g to `target`, per held-out batch.

    z* comes from a tight Anderson solve; g is the gradient of the cross-entropy at the output.
    """
    deq, rows = frozen.deq, []
    for x, (_, targets) in zip(frozen.test_inputs, frozen.test_batches, strict=True):
        with torch.no_grad():
            z_star = deq(x, solver="anderson", tol=1e-6, max_iter=200)
        layout = StateLayout.of(z_star)
        z = layout.flatten(z_star).requires_grad_()
        fz = layout.flatten(deq.cell(layout.unflatten(z), x))
        out = fz.detach().requires_grad_()
        loss = F.cross_entropy(frozen.logits(layout.unflatten(out)), targets.flatten())
        (grad,) = torch.autograd.grad(loss, out)

        def adjoint(y, grad=grad, fz=fz, z=z):
            (vjp,) = torch.autograd.grad(fz, z, y, retain_graph=True)
            return vjp + grad

        sol = eq.solve(adjoint, grad, solver, tol=target, max_iter=cap, on_failure="ignore")
        rows.append(sol.nfe)
    return rows


def matches(frozen: Frozen, value: float, converged: float) -> bool:
    """Whether a task metric equals the converged one: the same accuracy, or bits per character
    within 0.1% (a solve stopped early scores slightly differently, in either direction)."""
    if frozen.task == "lm":
        return value <= converged * 1.001
    return value >= converged


def run(
    out: Path, settings: Settings, checkpoint: Path | None = None, log=print, seed: int = 0
) -> dict:
    """Train (or load) the model, train the neural solver, measure; the results as a dict."""
    out.mkdir(parents=True, exist_ok=True)
    clock = CLOCKS["cpu"] if torch.get_num_threads() == 1 else CLOCKS["wall"]
    if checkpoint is None:
        start = time.perf_counter()
        checkpoint = train_model(out / "model", (f"run.seed={seed}", *settings.train_overrides))
        log(f"trained the model in {time.perf_counter() - start:.0f} s")
    frozen = load_frozen(checkpoint, settings.sampling)
    torch.manual_seed(seed)  # the neural solver's initial weights

    neural = NeuralSolver.for_model(
        frozen.train_inputs[0],
        frozen.deq.initial_state(frozen.train_inputs[0]),
        init_width=settings.init_width,
        init_skip=settings.init_skip,
        learned_steps=settings.training.unroll,
    )
    start = clock()
    neural, training_log = fit_neural_solver(
        frozen.deq, frozen.train_inputs, neural, settings.training, progress=False
    )
    training_seconds = clock() - start
    initializer_only = copy.deepcopy(neural)
    initializer_only.config["learned_steps"] = 0  # its initial guess, then classical Anderson
    solvers: dict[str, Any] = {name: name for name in CLASSICAL}
    solvers["initializer + anderson"] = initializer_only
    solvers["neural"] = neural
    cost = initializer_cost(neural, frozen.deq, frozen.test_inputs[0])
    log(
        f"neural solver: {neural.num_parameters()} parameters, trained in "
        f"{training_seconds:.1f} s, initializer {cost:.4f} of a cell evaluation"
    )

    def start_of(solver, x):
        return frozen.deq.initial_state(x, solver if isinstance(solver, eq.Solver) else None)

    curves = {
        name: torch.cat(
            [
                best_residuals(frozen.deq, x, start_of(solver, x), solver, settings.cap)
                for x in frozen.test_inputs
            ],
            dim=1,
        )
        for name, solver in solvers.items()
    }
    offset = {name: cost if isinstance(s, NeuralSolver) else 0.0 for name, s in solvers.items()}
    per_sample = {
        name: {
            f"{target:g}": statistics.median(
                (evaluations_to(curve, target) + offset[name]).tolist()
            )
            for target in settings.targets
        }
        for name, curve in curves.items()
    }
    batches = {
        name: {
            f"{target:g}": solve_to(frozen.deq, frozen.test_inputs, s, target, settings.cap)
            for target in settings.targets
        }
        for name, s in solvers.items()
    }
    candidates = {
        name: (
            lambda s=s: solve_to(frozen.deq, frozen.test_inputs, s, settings.headline, settings.cap)
        )
        for name, s in solvers.items()
    }
    timings = interleaved(candidates, repeats=settings.repeats, warmup=1, clock=clock)
    metrics = {
        name: [task_metric(frozen, s, b) for b in settings.budgets] for name, s in solvers.items()
    }
    full = task_metric(frozen, "anderson", 200)
    parity = {  # the smallest budget at which each solver matches the converged metric
        name: next(
            (b for b, v in zip(settings.budgets, values, strict=True) if matches(frozen, v, full)),
            None,
        )
        for name, values in metrics.items()
    }
    forwards = {
        name: (lambda s=solvers[name], b=budget: forward_all(frozen, s, b))
        for name, budget in parity.items()
        if budget is not None
    }
    parity_seconds = {}
    if forwards:
        parity_timings = interleaved(forwards, repeats=settings.repeats, warmup=1, clock=clock)
        parity_seconds = {name: parity_timings.median(name) for name in forwards}
    adjoint = {
        name: adjoint_nfe(frozen, s, settings.headline, settings.cap)
        for name, s in solvers.items()
        if name in ("anderson", "neural")
    }
    results = dict(
        checkpoint=str(checkpoint),
        seed=seed,
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        clock="thread CPU" if clock is CLOCKS["cpu"] else "wall",
        model_parameters=frozen.parameters,
        solver_parameters=neural.num_parameters(),
        initializer_parameters=sum(p.numel() for p in neural.initializer.parameters()),
        initializer_cost=cost,
        training=dict(
            seconds=training_seconds,
            epochs=settings.training.epochs,
            unroll=settings.training.unroll,
            batches=len(frozen.train_inputs),
            batch_size=settings.batch_size,
            loss=[training_log.loss[0], training_log.loss[-1]],
            init_error=[training_log.init_error[0], training_log.init_error[-1]],
        ),
        task=frozen.task,
        metric=frozen.metric,
        test_samples=frozen.test_samples,
        test_solves=sum(len(targets) for _, targets in frozen.test_batches),
        cap=settings.cap,
        targets=list(settings.targets),
        headline=settings.headline,
        curves={
            name: {
                "worst": curve.max(dim=1).values.tolist(),
                "median": curve.median(dim=1).values.tolist(),
            }
            for name, curve in curves.items()
        },
        nfe_offset=offset,
        per_sample_median_nfe=per_sample,
        batch_nfe={
            name: {t: [n for n, _ in rows] for t, rows in by_target.items()}
            for name, by_target in batches.items()
        },
        batch_reached={
            name: {t: all(ok for _, ok in rows) for t, rows in by_target.items()}
            for name, by_target in batches.items()
        },
        seconds={name: timings.median(name) for name in solvers},
        seconds_ratio_to_neural={name: timings.ratio(name, "neural") for name in solvers},
        budgets=list(settings.budgets),
        task_metric=metrics,
        converged_metric=full,
        parity_budget=parity,
        parity_seconds=parity_seconds,
        adjoint_nfe=adjoint,
    )
    (out / "results.json").write_text(json.dumps(results, indent=2))
    neural.save(out / "neural_solver.pt")
    return results


# ---------------------------------------------------------------------- the report


def _mean(values: list[int]) -> float:
    return sum(values) / len(values)


def parity_check(r: dict) -> Check:
    """At the converged metric: NFE and time of the neural solver against the classical best."""
    target = (
        f"at the fully converged {_metric_word(r)}: at least {NFE_TARGET:g}x fewer NFE and "
        f"{TIME_TARGET:g}x less time than the best classical solver"
    )
    budgets = {n: r["parity_budget"][n] for n in CLASSICAL if r["parity_budget"][n] is not None}
    neural = r["parity_budget"]["neural"]
    if not budgets or neural is None:
        return Check(target, "not reached within the budgets", None if neural else False)
    nfe_ratio = min(budgets.values()) / (neural + r["nfe_offset"]["neural"])
    seconds = min(r["parity_seconds"][n] for n in budgets)
    time_ratio = seconds / r["parity_seconds"]["neural"]
    return Check(
        target,
        f"{nfe_ratio:.2f}x fewer NFE, {time_ratio:.2f}x less time",
        nfe_ratio >= NFE_TARGET and time_ratio >= TIME_TARGET,
    )


def _metric_word(r: dict) -> str:
    return "bits per character" if r.get("task") == "lm" else "accuracy"


def _shown(r: dict, value: float) -> float:
    return r["metric"]["scale"] * value


def render(r: dict, out: Path) -> Section:
    """The report section for the results of `run` above."""
    targets = [f"{t:g}" for t in r["targets"]]
    head = f"{r['headline']:g}"
    share = r["solver_parameters"] / r["model_parameters"]
    language = r["task"] == "lm"
    per = "window" if language else "sample"
    metric = r["metric"]
    held_out = (
        "validation windows (a residual is over a whole window)" if language else "test images"
    )
    section = Section(
        name="neural-lm" if language else "neural",
        title=(
            "Learned solver on the DEQ-Transformer (character language model)"
            if language
            else "Learned solver on the default MDEQ (digits)"
        ),
        summary=(
            f"The {'DEQ-Transformer' if language else 'MDEQ'} from `equilibria train` is frozen "
            "and an `eq.NeuralSolver` is trained on the DEQ inputs of "
            f"{'training text windows' if language else 'training images'} (no labels): fixed "
            "points from a long Anderson solve, the initializer fitted to them alone first, then "
            "K unrolled learned steps with a loss on every step. Held-out "
            f"{held_out}; 'initializer + anderson' is the learned initial guess followed by "
            "classical Anderson (no learned steps). NFE counts every cell evaluation, the "
            "safeguard's too, plus the initializer's FLOPs as a fraction of one evaluation."
        ),
        settings={
            "model": f"{r['model_parameters']} parameters ({r['checkpoint']})",
            "neural solver": (
                f"{r['solver_parameters']} parameters ({100 * share:.2f}% of the model; "
                f"initializer {r['initializer_parameters']}, "
                f"{r['initializer_cost']:.4f} of a cell evaluation)"
            ),
            "solver training": (
                f"{r['training']['epochs']} epochs x {r['training']['batches']} batches of "
                f"{r['training']['batch_size']}, K = {r['training']['unroll']}, "
                f"{r['training']['seconds']:.0f} s ({r['clock']}); loss "
                f"{r['training']['loss'][0]:.3f} -> {r['training']['loss'][1]:.3f}"
            ),
            "test": (
                f"{r['test_solves']} validation windows ({r['test_samples']} characters)"
                if language
                else f"{r['test_samples']} images"
            )
            + f", cap {r['cap']} evaluations",
            "timing": f"{r['clock']} time, torch {r['torch']}, {r['threads']} thread(s)",
        },
    )
    table = Table(
        "Evaluations to a relative residual (held-out)",
        [Column("solver", "solver")]
        + [Column(f"s{t}", f"median NFE per {per} to {t}", ".2f") for t in targets]
        + [Column(f"b{t}", f"mean NFE per batch to {t}", ".1f") for t in targets]
        + [
            Column("seconds", f"{r['clock']} s, all batches to {head}", ".3f"),
            Column("adjoint", f"backward (adjoint) NFE to {head}", ".1f"),
        ],
    )
    for name in r["curves"]:
        row = {"solver": name, "seconds": r["seconds"][name]}
        for t in targets:
            row[f"s{t}"] = r["per_sample_median_nfe"][name][t]
            reached = r["batch_reached"][name][t]
            mean = _mean(r["batch_nfe"][name][t]) + r["nfe_offset"][name]
            row[f"b{t}"] = mean if reached else f">{mean:.1f} (cap)"
        if name in r["adjoint_nfe"]:
            row["adjoint"] = _mean(r["adjoint_nfe"][name])
        table.add(**row)
    section.tables.append(table)
    value = _shown(r, r["converged_metric"])
    converged = f"{value:.3f} bits/char" if language else f"{value:.2f}%"
    digits = ".3f" if language else ".2f"
    by_budget = Table(
        f"{metric['name'][0].upper()}{metric['name'][1:]} at a fixed NFE budget (fully "
        f"converged: {converged})",
        [Column("solver", "solver")]
        + [Column(f"a{b}", f"@ {b} NFE", digits) for b in r["budgets"]],
    )
    for name, values in r["task_metric"].items():
        by_budget.add(
            solver=name,
            **{f"a{b}": _shown(r, v) for b, v in zip(r["budgets"], values, strict=True)},
        )
    section.tables.append(by_budget)
    parity = Table(
        f"Cost to the fully converged {_metric_word(r)} ({converged}"
        + (", within 0.1%)" if language else ")"),
        [
            Column("solver", "solver"),
            Column("nfe", "smallest NFE budget that matches it"),
            Column("seconds", f"{r['clock']} s, held-out set at that budget", ".3f"),
        ],
    )
    for name, budget in r["parity_budget"].items():
        nfe = None if budget is None else budget + r["nfe_offset"][name]
        seconds = r["parity_seconds"].get(name)
        parity.add(solver=name, nfe=None if nfe is None else f"{round(nfe, 2):g}", seconds=seconds)
    section.tables.append(parity)

    best = min(CLASSICAL, key=lambda n: _mean(r["batch_nfe"][n][head]))
    neural_nfe = _mean(r["batch_nfe"]["neural"][head]) + r["nfe_offset"]["neural"]
    ratio = _mean(r["batch_nfe"][best][head]) / neural_nfe
    sample_ratio = (
        r["per_sample_median_nfe"][best][head] / r["per_sample_median_nfe"]["neural"][head]
    )
    fastest = min(CLASSICAL, key=lambda n: r["seconds"][n])
    time_ratio = r["seconds_ratio_to_neural"][fastest]
    sign = 1 if metric["higher_is_better"] else -1
    slack = 0.005 if not language else 0.01  # half a point of accuracy, or 0.01 bits/char
    equal = all(
        sign * (r["task_metric"]["neural"][i] - r["task_metric"][best][i]) >= -slack
        for i in range(len(r["budgets"]))
    )
    section.checks += [
        Check(
            f"at least {NFE_TARGET:g}x fewer NFE than the best classical solver ({best}) to rel "
            f"{head}",
            f"{ratio:.2f}x per batch, {sample_ratio:.2f}x per {per} (median)",
            ratio >= NFE_TARGET,
        ),
        Check(
            f"at least {TIME_TARGET:g}x less time than the fastest classical solver ({fastest})",
            f"{time_ratio:.2f}x",
            time_ratio >= TIME_TARGET,
        ),
        Check(
            f"{_metric_word(r)} at every budget no worse than the best classical solver's "
            + ("(0.01 bits/char)" if language else "(0.5 points)"),
            "yes" if equal else "no",
            equal,
        ),
        parity_check(r),
        Check(
            f"solver size <= {100 * SIZE_TARGET:g}% of the model",
            f"{100 * share:.2f}%",
            share <= SIZE_TARGET,
        ),
    ]
    panels = []
    for which in ("worst", "median"):
        lines = {}
        for name, curve in r["curves"].items():
            values = curve[which]
            xs = [i + 1 + r["nfe_offset"][name] for i in range(len(values))]
            lines[name] = (xs, [max(v, 1e-12) for v in values])
        panels.append((f"{which} {per}", "best relative residual", lines))
    prefix = "neural_lm" if language else "neural"
    plot = line_plot(out / f"{prefix}_residual_vs_nfe.png", panels, xlabel="NFE", log_y=True)
    section.figures.append(Figure(str(plot.relative_to(out)), "Held-out residual vs NFE"))
    lines = {
        name: (r["budgets"], [_shown(r, v) for v in values])
        for name, values in r["task_metric"].items()
    }
    name = "bits_per_char" if language else "accuracy"
    plot = line_plot(
        out / f"{prefix}_{name}_vs_nfe.png",
        [(metric["name"], metric["name"], lines)],
        xlabel="NFE budget",
    )
    section.figures.append(
        Figure(str(plot.relative_to(out)), f"{metric['name'].capitalize()} vs NFE budget")
    )
    if not math.isfinite(ratio):
        section.notes.append("The neural solver did not reach the headline residual.")
    return section


@register(
    "neural",
    "Learned solver: initializer + learned Anderson updates on the MDEQ (digits)",
    order=230,
    requires=("sklearn", "matplotlib"),
)
def run_part(config: BenchConfig) -> Section:
    if config.device != "cpu":
        raise ValueError("the neural solver benchmark runs on the CPU only")
    settings = Settings.quick() if config.quick else Settings()
    results = run(config.out / "neural", settings, log=lambda text: None, seed=config.seed)
    return render(results, config.out)


@register(
    "neural-lm",
    "Learned solver on the DEQ-Transformer character language model",
    order=231,
    requires=("matplotlib",),
)
def run_language_part(config: BenchConfig) -> Section:
    if config.device != "cpu":
        raise ValueError("the neural solver benchmark runs on the CPU only")
    settings = Settings.language(config.quick)
    results = run(config.out / "neural-lm", settings, log=lambda text: None, seed=config.seed)
    return render(results, config.out)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """`python -m benchmarks.parts.neural`: the part alone, on a given model or one it trains;
    prints the section and writes `results.json`."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.parts.neural", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, default=Path("results/neural_solvers"))
    parser.add_argument(
        "--checkpoint", type=Path, help="a trained MDEQ, or with --lm a DEQ-Transformer "
        "(default: train one)",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="tiny run for a fast look")
    parser.add_argument(
        "--lm", action="store_true", help="the DEQ-Transformer language model instead"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.lm:
        settings = Settings.language(args.quick)
    else:
        settings = Settings.quick() if args.quick else Settings()
    results = run(args.out, settings, args.checkpoint)
    section = render(results, args.out)
    print(section.to_markdown())
    return results


if __name__ == "__main__":
    main()
