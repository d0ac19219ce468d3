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

    python -m benchmarks.neural_solvers [--out results/neural_solvers] [--quick] [--lm]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
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

from .lm_training import SHAKESPEARE
from .timing import CLOCKS, interleaved

CLASSICAL = ("picard", "anderson", "broyden")


@dataclass(frozen=True)
class Settings:
    """What the benchmark trains and measures.

    Attributes:
        train_overrides: config overrides for `equilibria train` (empty: the default run).
        solver_batches, batch_size: training inputs of the neural solver.
        training: the neural solver's training settings.
        init_width: hidden channels of its initializer.
        targets: relative residuals to reach; `headline` is the one the target is judged at.
        cap: most evaluations a solve may use on the way to a target.
        budgets: NFE budgets for the accuracy table.
        repeats: timed rounds (interleaved, after one warm-up round).
        test_batches: held-out batches measured (None: the whole test split).
    """

    train_overrides: tuple[str, ...] = ()
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

    @classmethod
    def language(cls, quick: bool = False) -> Settings:
        """The DEQ-Transformer on Tiny Shakespeare (the bundled corpus when it is absent)."""
        text = (f"lm.text={SHAKESPEARE}",) if SHAKESPEARE.is_file() else ()
        model = (
            *text,
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


# -------------------------------------------------------------------------- the frozen model


@dataclass
class Frozen:
    """A trained model with its DEQ layer, the DEQ inputs it sees, and held-out batches.

    `test_batches` holds (model input, targets) pairs: test images and labels, or validation
    windows and their next characters; `test_inputs` the DEQ inputs of those batches.
    """

    model: torch.nn.Module
    deq: eq.DEQ
    task: str  # "classify" or "lm"
    train_inputs: list[Any]
    test_batches: list[tuple[torch.Tensor, torch.Tensor]]
    test_inputs: list[Any]
    parameters: int
    path: Path

    @property
    def test_samples(self) -> int:
        """Held-out images, or predicted characters."""
        return sum(targets.numel() for _, targets in self.test_batches)

    @property
    def metric(self) -> dict[str, Any]:
        """What `task_metric` measures: its name, whether higher is better, its display scale."""
        if self.task == "lm":
            return {"name": "validation bits/char", "higher_is_better": False, "scale": 1.0}
        return {"name": "test accuracy %", "higher_is_better": True, "scale": 100.0}

    def logits(self, state: Any) -> torch.Tensor:
        """The model's output layer applied to a DEQ state (flattened over positions)."""
        if self.task == "lm":
            return self.model._logits(state).flatten(0, 1)
        return self.model.head(state)


def train_model(out: Path, overrides: tuple[str, ...]) -> Path:
    """`python -m equilibria train --out OUT overrides...` in its own process; the checkpoint."""
    command = [sys.executable, "-m", "equilibria", "train", "--out", str(out)]
    command += ["run.progress=false", *overrides]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    return out / "checkpoint.pt"


def load_frozen(path: Path, settings: Settings) -> Frozen:
    """The model of checkpoint `path` in eval mode, with its DEQ inputs (`settings.task`)."""
    if settings.task == "lm":
        return load_frozen_language_model(path, settings)
    return load_frozen_classifier(path, settings)


def load_frozen_classifier(path: Path, settings: Settings) -> Frozen:
    """The MDEQ of checkpoint `path` in eval mode, with the DEQ inputs of its images."""
    from equilibria.config import Config
    from equilibria.data import load_data
    from equilibria.models import build_model
    from equilibria.neural.inputs import deq_inputs, find_deq
    from equilibria.training.checkpoint import load_checkpoint, restore_model

    checkpoint = load_checkpoint(path)
    config = Config.from_dict(checkpoint["config"])
    data = load_data(config.data.dataset, config.data.data_dir, download=config.data.download)
    model = build_model(config, data.shape, data.classes)
    restore_model(model, checkpoint.get("average") or checkpoint["model"], str(path))
    model.eval()
    deq = find_deq(model)
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))
    chosen = order[: settings.solver_batches * settings.batch_size].split(settings.batch_size)
    train_images = [data.inputs(data.train.images[idx]) for idx in chosen]
    test_idx = list(torch.arange(len(data.test)).split(settings.batch_size))
    test_idx = test_idx[: settings.test_batches] if settings.test_batches else test_idx
    test_images = [data.inputs(data.test.images[idx]) for idx in test_idx]
    return Frozen(
        model=model,
        deq=deq,
        task="classify",
        train_inputs=deq_inputs(model, deq, train_images),
        test_batches=[
            (x, data.test.labels[idx]) for x, idx in zip(test_images, test_idx, strict=True)
        ],
        test_inputs=deq_inputs(model, deq, test_images),
        parameters=sum(p.numel() for p in model.parameters()),
        path=path,
    )


def load_frozen_language_model(path: Path, settings: Settings) -> Frozen:
    """The DEQ-Transformer of checkpoint `path` in eval mode: the DEQ inputs of training windows
    (drawn as `equilibria train-solver` draws them) and consecutive validation windows."""
    from equilibria.lm.restore import load_language_model, scored_text
    from equilibria.lm.solver_inputs import training_windows
    from equilibria.neural.inputs import deq_inputs, find_deq

    config, vocab, model = load_language_model(path, None)
    model.eval()
    deq = find_deq(model)
    data = scored_text(config, vocab, path)
    length = config.lm.seq_len
    train = training_windows(data, settings.solver_batches, settings.batch_size, length)
    starts = data.val_starts(length, len(data.val)).split(settings.batch_size)
    starts = starts[: settings.test_batches] if settings.test_batches else starts
    test = [data.windows(data.val, batch, length) for batch in starts]
    return Frozen(
        model=model,
        deq=deq,
        task="lm",
        train_inputs=deq_inputs(model, deq, train),
        test_batches=test,
        test_inputs=deq_inputs(model, deq, [tokens for tokens, _ in test]),
        parameters=sum(p.numel() for p in model.parameters()),
        path=path,
    )


# -------------------------------------------------------------------------- measurements


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


def best_residuals(deq: eq.DEQ, x: torch.Tensor, z0: Any, solver: Any, cap: int) -> torch.Tensor:
    """(cap, batch): each sample's best relative residual after 1 .. cap cell evaluations.

    Every evaluation the solve makes is recorded (a safeguard's extra ones too), so the curve
    is indexed by true NFE, not by solver iterations.
    """
    seen: list[torch.Tensor] = []

    def cell(z):
        fz = deq.cell(z, x)
        layout = StateLayout.of(z)
        flat_z, flat_fz = layout.flatten(z), layout.flatten(fz)
        seen.append((flat_fz - flat_z).norm(dim=1) / flat_fz.norm(dim=1).clamp_min(1e-30))
        return fz

    with torch.no_grad():
        eq.solve(cell, z0, solver, tol=0.0, max_iter=cap, patience=None, on_failure="ignore")
    residuals = torch.stack(seen).cummin(dim=0).values
    if len(residuals) < cap:  # stopped early (a non-finite iterate): hold the last value
        residuals = torch.cat([residuals, residuals[-1:].expand(cap - len(residuals), -1)])
    return residuals


def evaluations_to(residuals: torch.Tensor, target: float) -> torch.Tensor:
    """Per sample: the first NFE (1-based) at which the best residual is <= target (inf: never)."""
    reached = residuals <= target
    first = reached.float().argmax(dim=0) + 1.0
    return torch.where(reached.any(dim=0), first, torch.full_like(first, float("inf")))


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


# -------------------------------------------------------------------------- the whole run


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
    frozen = load_frozen(checkpoint, settings)
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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    from .parts.neural import render

    section = render(results, args.out)
    print(section.to_markdown())
    return results


if __name__ == "__main__":
    main()
