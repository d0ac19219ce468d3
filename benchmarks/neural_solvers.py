"""The learned solver against picard, anderson and broyden on a trained MDEQ, held-out inputs.

The default multiscale DEQ is trained on digits with `equilibria train` (every setting at its
default; the quick preset trains a smaller, shorter run), frozen, and a NeuralSolver is trained
on the DEQ inputs of training images (no labels). On the test images we measure:

- residual vs NFE: each sample's best relative residual ||f(z) - z|| / ||f(z)|| after every
  evaluation of the cell (the safeguard's evaluations included), with the initializer's cost
  counted as a fraction of an evaluation (its FLOPs over the cell's);
- NFE and thread CPU time to reach a fixed relative residual (the solve stops when every sample
  of a batch is there), timed interleaved;
- test accuracy at fixed NFE budgets (the model's own forward, as `equilibria eval` runs it);
- the adjoint (backward) solve's NFE to a fixed residual with each solver.

    python -m benchmarks.neural_solvers [--out results/neural_solvers] [--quick]
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
from equilibria.neural import NeuralSolver, SolverTraining, fit_neural_solver
from equilibria.state import StateLayout

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
    """A trained classifier with its DEQ layer, its data and its DEQ inputs."""

    model: torch.nn.Module
    deq: eq.DEQ
    data: Any
    train_inputs: list[torch.Tensor]
    test_images: list[torch.Tensor]
    test_labels: list[torch.Tensor]
    test_inputs: list[torch.Tensor]
    parameters: int
    path: Path


def train_model(out: Path, overrides: tuple[str, ...]) -> Path:
    """`python -m equilibria train --out OUT overrides...` in its own process; the checkpoint."""
    command = [sys.executable, "-m", "equilibria", "train", "--out", str(out)]
    command += ["run.progress=false", *overrides]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    return out / "checkpoint.pt"


def load_frozen(path: Path, settings: Settings) -> Frozen:
    """The model of checkpoint `path` in eval mode, with the DEQ inputs of its images."""
    from equilibria.cli.train_solver import deq_inputs, find_deq
    from equilibria.config import Config
    from equilibria.data import load_data
    from equilibria.models import build_model
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
        data=data,
        train_inputs=deq_inputs(model, deq, train_images),
        test_images=test_images,
        test_labels=[data.test.labels[idx] for idx in test_idx],
        test_inputs=deq_inputs(model, deq, test_images),
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


def accuracy(frozen: Frozen, solver: Any, budget: int) -> float:
    """Test accuracy of the model's own forward with at most `budget` evaluations."""
    correct = total = 0
    with torch.no_grad():
        for images, labels in zip(frozen.test_images, frozen.test_labels, strict=True):
            logits = frozen.model(images, solver=solver, max_iter=budget, tol=0.0)
            correct += int((logits.argmax(1) == labels).sum())
            total += len(labels)
    return correct / total


def classify_all(frozen: Frozen, solver: Any, budget: int) -> None:
    """The model's forward on every test batch with at most `budget` evaluations (timed)."""
    with torch.no_grad():
        for images in frozen.test_images:
            frozen.model(images, solver=solver, max_iter=budget, tol=0.0)


def adjoint_nfe(frozen: Frozen, solver: Any, target: float, cap: int) -> list[int]:
    """NFE of the backward (adjoint) solve y = y J + g to `target`, per test batch.

    z* comes from a tight Anderson solve; g is the gradient of the cross-entropy at the output.
    """
    deq, rows = frozen.deq, []
    for x, labels in zip(frozen.test_inputs, frozen.test_labels, strict=True):
        with torch.no_grad():
            z_star = deq(x, solver="anderson", tol=1e-6, max_iter=200)
        layout = StateLayout.of(z_star)
        z = layout.flatten(z_star).requires_grad_()
        fz = layout.flatten(deq.cell(layout.unflatten(z), x))
        out = fz.detach().requires_grad_()
        loss = F.cross_entropy(frozen.model.head(layout.unflatten(out)), labels)
        (grad,) = torch.autograd.grad(loss, out)

        def adjoint(y, grad=grad, fz=fz, z=z):
            (vjp,) = torch.autograd.grad(fz, z, y, retain_graph=True)
            return vjp + grad

        sol = eq.solve(adjoint, grad, solver, tol=target, max_iter=cap, on_failure="ignore")
        rows.append(sol.nfe)
    return rows


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
        log(f"trained the MDEQ in {time.perf_counter() - start:.0f} s")
    frozen = load_frozen(checkpoint, settings)
    torch.manual_seed(seed)  # the neural solver's initial weights

    neural = NeuralSolver.for_model(
        frozen.train_inputs[0],
        frozen.deq.initial_state(frozen.train_inputs[0]),
        init_width=settings.init_width,
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
    accuracies = {
        name: [accuracy(frozen, s, b) for b in settings.budgets] for name, s in solvers.items()
    }
    full = accuracy(frozen, "anderson", 200)
    parity = {  # the smallest budget at which each solver matches the converged accuracy
        name: next((b for b, a in zip(settings.budgets, values, strict=True) if a >= full), None)
        for name, values in accuracies.items()
    }
    forwards = {
        name: (lambda s=solvers[name], b=budget: classify_all(frozen, s, b))
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
        test_samples=sum(len(labels) for labels in frozen.test_labels),
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
        accuracy=accuracies,
        converged_accuracy=full,
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
    parser.add_argument("--checkpoint", type=Path, help="a trained MDEQ (default: train one)")
    parser.add_argument("--quick", action="store_true", help="tiny run for a fast look")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = Settings.quick() if args.quick else Settings()
    results = run(args.out, settings, args.checkpoint)
    from .parts.neural import render

    section = render(results, args.out)
    print(section.to_markdown())
    return results


if __name__ == "__main__":
    main()
