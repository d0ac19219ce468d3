"""Learned solver vs classical solvers on held-out inputs of a trained DEQ image classifier.

A small convolutional DEQ is trained on scikit-learn's digits (fixed split), frozen, and a
NeuralSolver is trained on the DEQ inputs of the training split. On the test split we record:
residual vs NFE for picard, anderson, broyden and the neural solver (every evaluation counted,
including the safeguard's), NFE and wall time to reach a target relative residual, and test
accuracy at fixed NFE budgets.

    python -m benchmarks.neural_solvers [--out results/neural_solvers] [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

import equilibria as eq
from equilibria.cells import ConvCell
from equilibria.neural import NeuralSolver, SolverTraining, fit_neural_solver

SOLVERS = {"picard": "picard", "anderson": "anderson", "broyden": "broyden"}


def digits_split(seed: int = 0):
    """scikit-learn's digits as (1, 8, 8) images in [0, 1]: 1297 train / 500 test, fixed seed."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    test, train = order[:500], order[500:]
    return (x[train], y[train]), (x[test], y[test])


class DigitsDEQ(nn.Module):
    """Stem conv -> DEQ of a residual conv cell on 8x8 maps -> 4x4-pooled linear head."""

    def __init__(self, channels: int = 24, **deq_options) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, channels, 3, padding=1), nn.GroupNorm(4, channels))
        self.deq = eq.DEQ(ConvCell(channels), **deq_options)
        self.head = nn.Linear(channels * 16, 10)

    def classify(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(F.adaptive_avg_pool2d(z, 4).flatten(1))

    def forward(self, images: torch.Tensor, **call) -> torch.Tensor:
        return self.classify(self.deq(self.stem(images), **call))


def train_model(train, epochs: int, seed: int = 0) -> DigitsDEQ:
    torch.manual_seed(seed)
    model = DigitsDEQ(tol=1e-3, max_iter=30, on_failure="ignore")
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    x, y = train
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(64):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def deq_inputs(model: DigitsDEQ, images: torch.Tensor, batch: int = 128) -> list[torch.Tensor]:
    with torch.no_grad():
        return [model.stem(chunk) for chunk in images.split(batch)]


def solve_curve(model, x, solver, z0, max_iter):
    """Relative-residual trace (worst sample per NFE), NFE, and seconds for one solve."""
    cell = model.deq.cell
    start = time.perf_counter()
    with torch.no_grad():
        if z0 is None:
            z0 = torch.zeros_like(x)
        sol = eq.solve(
            lambda z: cell(z, x),
            z0,
            solver,
            tol=0.0,
            max_iter=max_iter,
            patience=None,
            on_failure="ignore",
        )
    return sol, time.perf_counter() - start


def nfe_and_time_to(model, xs, solver, target, max_iter, neural=None):
    """Per-batch evaluations, total seconds, and whether every test sample reached `target`."""
    nfe, seconds, reached = [], 0.0, True
    for x in xs:
        start = time.perf_counter()
        with torch.no_grad():
            z0 = neural.initial_state(x) if neural is not None else torch.zeros_like(x)
            sol = eq.solve(
                lambda z, x=x: model.deq.cell(z, x),
                z0,
                solver,
                tol=target,
                max_iter=max_iter,
                on_failure="ignore",
            )
        seconds += time.perf_counter() - start
        nfe.append(sol.nfe)
        reached &= bool(sol.converged.all())
    return nfe, seconds, reached


def accuracy_at_budget(model, images, labels, solver, budget, neural=None):
    with torch.no_grad():
        x = model.stem(images)
        z0 = neural.initial_state(x) if neural is not None else torch.zeros_like(x)
        sol = eq.solve(
            lambda z: model.deq.cell(z, x),
            z0,
            solver,
            tol=0.0,
            max_iter=budget,
            patience=None,
            on_failure="ignore",
        )
        z = model.deq.cell(sol.z, x)
        return float((model.classify(z).argmax(1) == labels).float().mean())


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/neural_solvers"))
    parser.add_argument("--quick", action="store_true", help="tiny run for smoke tests")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--target", type=float, default=1e-3, help="relative residual to reach")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    train, test = digits_split()
    if args.quick:
        train = (train[0][:256], train[1][:256])
        test = (test[0][:128], test[1][:128])
    epochs, solver_epochs, max_iter = (1, 2, 20) if args.quick else (4, 15, 100)

    t0 = time.perf_counter()
    model = train_model(train, epochs)
    model_params = sum(p.numel() for p in model.parameters())
    acc = accuracy_at_budget(model, *test, "anderson", 60)
    print(
        f"model: {model_params} parameters, test accuracy {acc:.4f} "
        f"({time.perf_counter() - t0:.1f} s to train)"
    )

    train_x = deq_inputs(model, train[0])
    test_x = deq_inputs(model, test[0])
    neural = NeuralSolver.for_model(train_x[0], torch.zeros_like(train_x[0]))
    t0 = time.perf_counter()
    neural, log = fit_neural_solver(
        model.deq, train_x, neural, SolverTraining(epochs=solver_epochs, unroll=6, lr=3e-3)
    )
    solver_seconds = time.perf_counter() - t0
    print(
        f"neural solver: {neural.num_parameters()} parameters "
        f"({100 * neural.num_parameters() / model_params:.2f}% of the model), "
        f"trained in {solver_seconds:.1f} s, loss {log.loss[0]:.3f} -> {log.loss[-1]:.3f}"
    )

    solvers = {**SOLVERS, "neural": neural}
    # residual vs NFE on the first test batch
    curves = {}
    for name, solver in solvers.items():
        z0 = neural.initial_state(test_x[0]) if name == "neural" else None
        sol, _ = solve_curve(model, test_x[0], solver, z0, max_iter)
        curves[name] = sol.rel_trace.max(dim=1).values.tolist()
    # NFE and wall time to the target, median of 3 timed repeats after a warm-up
    to_target = {}
    for name, solver in solvers.items():
        init = neural if name == "neural" else None
        nfe_and_time_to(model, test_x, solver, args.target, max_iter, init)  # warm-up
        runs = [
            nfe_and_time_to(model, test_x, solver, args.target, max_iter, init) for _ in range(3)
        ]
        to_target[name] = dict(
            nfe=max(runs[0][0]),
            median_nfe=float(np.median(runs[0][0])),
            seconds=float(np.median([r[1] for r in runs])),
            reached=runs[0][2],
        )
    budgets = [1, 2, 3, 4, 6, 8]
    accuracy = {
        name: [
            accuracy_at_budget(model, *test, solver, b, neural if name == "neural" else None)
            for b in budgets
        ]
        for name, solver in solvers.items()
    }
    best = min(
        (n for n in SOLVERS if to_target[n]["reached"]),
        key=lambda n: to_target[n]["seconds"],
        default=None,
    )
    results = dict(
        machine=platform.processor() or platform.machine(),
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        quick=args.quick,
        model_parameters=model_params,
        solver_parameters=neural.num_parameters(),
        model_test_accuracy=acc,
        solver_training_seconds=solver_seconds,
        target_rel_residual=args.target,
        curves=curves,
        to_target=to_target,
        budgets=budgets,
        accuracy=accuracy,
        best_classical=best,
    )
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    report = render(results)
    (args.out / "report.md").write_text(report)
    plot(results, args.out / "residual_vs_nfe.png")
    print(report)
    return results


def render(r: dict) -> str:
    lines = [
        f"Digits conv DEQ ({r['model_parameters']} parameters, test accuracy "
        f"{100 * r['model_test_accuracy']:.1f}%), neural solver {r['solver_parameters']} "
        f"parameters ({100 * r['solver_parameters'] / r['model_parameters']:.1f}% of the model). "
        f"torch {r['torch']}, {r['threads']} threads.",
        "",
        f"| solver | NFE to rel. residual {r['target_rel_residual']:.0e}, worst batch "
        f"| median batch | wall time (s), all batches | "
        + " | ".join(f"acc. % @ {b} NFE" for b in r["budgets"])
        + " |",
        "|---|---|---|---|" + "---|" * len(r["budgets"]),
    ]
    for name, t in r["to_target"].items():
        nfe = f"{t['nfe']}" if t["reached"] else f">{t['nfe']} (not reached)"
        accs = " | ".join(f"{100 * a:.1f}" for a in r["accuracy"][name])
        lines.append(f"| {name} | {nfe} | {t['median_nfe']:.0f} | {t['seconds']:.3f} | {accs} |")
    best = r["best_classical"]
    if best:
        n, b = r["to_target"]["neural"], r["to_target"][best]
        shortfall = (
            ""
            if n["reached"]
            else ("; the neural solver left some samples short of the target within the cap")
        )
        lines += [
            "",
            f"Against the fastest classical solver that reached the target ({best}): "
            f"{b['median_nfe'] / n['median_nfe']:.2f}x fewer NFE on the median batch, "
            f"{b['seconds'] / n['seconds']:.2f}x less wall time over all batches{shortfall}.",
        ]
    return "\n".join(lines) + "\n"


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, curve in r["curves"].items():
        ax.semilogy(range(1, len(curve) + 1), curve, label=name)
    ax.axhline(r["target_rel_residual"], color="grey", lw=0.8, ls="--")
    ax.set_xlabel("function evaluations (NFE)")
    ax.set_ylabel("worst relative residual")
    ax.set_title("Held-out digits: residual vs NFE")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
