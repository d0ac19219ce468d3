"""The synthetic study of Jacobian regularization (Bai, Koltun and Kolter, ICML 2021).

y = 1.5 x^3 + x^2 - 5 x + 2 sin(x) - 3 + noise (std 0.05), fitted by a DEQ with the cell
f(z, x) = W2 relu(W1 z + U x + b), trained with forward and backward solves capped at 6 NFE, for
several penalty weights gamma (probability p of computing it per step). Targets are standardized
for training; MSE is reported in the original units. Reported on the test set: MSE at the
training cap and at relative residual 1e-3, evaluations to relative residual 1e-3, ||J_f(z*)||_F
and the spectral radius of J_f(z*).

    python examples/stability_synthetic.py            # about 2 minutes on 2 CPU cores
    python examples/stability_synthetic.py --gammas 0 2 --seeds 1 --epochs 10 --out /tmp/quick
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
from stability_report import environment, markdown_table, nfe_to_tolerance, write_markdown
from torch import nn
from tqdm import tqdm

import equilibria as eq

TOL = 1e-3  # the relative residual NFE is measured to
MEASURE_CAP = 100  # most evaluations allowed when measuring NFE to TOL


def target(x: torch.Tensor) -> torch.Tensor:
    return 1.5 * x**3 + x**2 - 5 * x + 2 * torch.sin(x) - 3


def make_data(n: int, generator: torch.Generator, low: float, high: float):
    x = torch.rand(n, 1, generator=generator) * (high - low) + low
    y = target(x) + 0.05 * torch.randn(n, 1, generator=generator)
    return x, y


class SyntheticCell(nn.Module):
    """f(z, x) = W2 relu(W1 z + U x + b)."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.width = width
        self.w1 = nn.Linear(width, hidden)  # its bias is b
        self.u = nn.Linear(1, hidden, bias=False)
        self.w2 = nn.Linear(hidden, width, bias=False)

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.w2(torch.relu(self.w1(z) + self.u(x)))

    def init_state(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.shape[0], self.width)


class Regressor(nn.Module):
    def __init__(self, args: argparse.Namespace, gamma: float, mean: float, std: float) -> None:
        super().__init__()
        self.mean, self.std = mean, std  # the targets' scale: the network predicts (y - mean) / std
        self.deq = eq.DEQ(
            SyntheticCell(args.width, args.hidden),
            "anderson",
            tol=TOL,
            max_iter=args.forward_cap,
            backward=eq.Implicit(max_iter=args.backward_cap),
            on_failure="ignore",
            jacobian_penalty=eq.JacobianPenalty(gamma=gamma, p=args.p),
        )
        self.head = nn.Linear(args.width, 1)

    def forward(self, x: torch.Tensor, **solve: object) -> torch.Tensor:
        """The standardized prediction; `predict` gives it in the original units."""
        return self.head(self.deq(x, **solve))

    def predict(self, x: torch.Tensor, **solve: object) -> torch.Tensor:
        return self(x, **solve) * self.std + self.mean


def frobenius(cell: nn.Module, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Exact ||J_f(z)||_F per sample (dense Jacobians by vmap)."""
    jac = torch.func.vmap(torch.func.jacrev(lambda v, u: cell(v[None], u[None])[0]))(z, x)
    return jac.flatten(1).norm(dim=1)


def evaluate(model: Regressor, x: torch.Tensor, y: torch.Tensor, cap: int) -> dict:
    model.eval()
    with torch.no_grad():
        mse_at_cap = float((model.predict(x, max_iter=cap, tol=0.0) - y).pow(2).mean())
        pred = model.predict(x, max_iter=MEASURE_CAP)
        nfe = nfe_to_tolerance(model.deq.stats.forward, TOL).float()
        z_star = model.deq.stats.forward.z
        mse_converged = float((pred - y).pow(2).mean())
    cell = model.deq.cell
    rho = eq.spectral_radius(lambda v: cell(v, x), z_star, iters=50, tol=1e-4)
    model.train()
    return {
        "mse_cap": mse_at_cap,
        "mse": mse_converged,
        "nfe_mean": float(nfe.mean()),
        "nfe_all": int(nfe.max()),
        "unconverged": int((nfe > MEASURE_CAP).sum()),
        "jac_fro": float(frobenius(cell, z_star, x).mean().detach()),
        "rho": float(rho.mean()),
        "residual_curve": model.deq.stats.forward.rel_trace.median(dim=1).values.tolist(),
    }


def train(args, gamma: float, seed: int, data, progress: tqdm) -> dict:
    torch.manual_seed(seed)
    (x_train, y_train), (x_test, y_test) = data
    mean, std = float(y_train.mean()), float(y_train.std())
    model = Regressor(args, gamma, mean, std)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    steps = args.epochs * math.ceil(len(x_train) / args.batch)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    history, start = [], time.perf_counter()
    for epoch in range(args.epochs):
        order = torch.randperm(len(x_train))
        for i in range(0, len(x_train), args.batch):
            index = order[i : i + args.batch]
            pred = model(x_train[index])
            loss = (pred - (y_train[index] - mean) / std).pow(2).mean()
            (loss + model.deq.stats.jacobian_loss).backward()
            optimizer.step()
            optimizer.zero_grad()
            schedule.step()
        if (epoch + 1) % args.eval_every == 0 or epoch + 1 == args.epochs:
            result = evaluate(model, x_test, y_test, args.forward_cap)
            history.append({"epoch": epoch + 1, **result})
        progress.update(1)
        progress.set_postfix(gamma=gamma, seed=seed, loss=f"{loss.item():.3g}")
    final = history[-1]
    return {
        **final,
        "gamma": gamma,
        "seed": seed,
        "seconds": time.perf_counter() - start,
        "history": history,
    }


def summarize(runs: list[dict], gammas: list[float]) -> list[list[object]]:
    rows = []
    for gamma in gammas:
        group = [r for r in runs if r["gamma"] == gamma]

        def stat(key, fmt, group=group):
            values = torch.tensor([float(r[key]) for r in group])
            if len(values) == 1:
                return format(float(values[0]), fmt)
            return f"{format(float(values.mean()), fmt)} ± {format(float(values.std()), fmt)}"

        rows.append(
            [
                gamma,
                stat("mse_cap", ".4f"),
                stat("mse", ".4f"),
                stat("nfe_mean", ".1f"),
                stat("nfe_all", ".1f"),
                stat("jac_fro", ".3f"),
                stat("rho", ".3f"),
                sum(r["unconverged"] for r in group),
                stat("seconds", ".0f"),
            ]
        )
    return rows


def plot(runs: list[dict], gammas: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    colors = plt.cm.viridis(torch.linspace(0, 0.9, len(gammas)).tolist())
    for gamma, color in zip(gammas, colors, strict=True):
        group = [r for r in runs if r["gamma"] == gamma]
        for k, run in enumerate(group):
            label = f"gamma={gamma}" if k == 0 else None
            curve = run["residual_curve"]
            axes[0].semilogy(range(1, len(curve) + 1), curve, color=color, label=label)
            epochs = [h["epoch"] for h in run["history"]]
            axes[1].plot(epochs, [h["nfe_mean"] for h in run["history"]], color=color, label=label)
            axes[2].plot(epochs, [h["jac_fro"] for h in run["history"]], color=color, label=label)
    axes[0].axhline(TOL, color="grey", linestyle=":")
    axes[0].set(xlabel="NFE", ylabel="median relative residual (test)", title="convergence")
    axes[1].set(xlabel="epoch", ylabel=f"mean NFE to rel. residual {TOL:g}", title="solve cost")
    axes[2].set(xlabel="epoch", ylabel="mean ||J_f(z*)||_F (test)", title="Jacobian norm")
    for ax in axes:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("results/stability"))
    parser.add_argument("--gammas", type=float, nargs="+", default=[0.0, 1.0, 2.0, 4.0, 16.0, 64.0])
    parser.add_argument("--p", type=float, default=0.4, help="probability of the penalty a step")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--width", type=int, default=50, help="state size")
    parser.add_argument("--hidden", type=int, default=50)
    parser.add_argument("--forward-cap", type=int, default=6)
    parser.add_argument("--backward-cap", type=int, default=6)
    parser.add_argument("--x-range", type=float, nargs=2, default=[-2.0, 2.0])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    generator = torch.Generator().manual_seed(1234)
    data = (
        make_data(4096, generator, *args.x_range),
        make_data(1000, generator, *args.x_range),
    )
    runs = []
    total = len(args.gammas) * args.seeds * args.epochs
    with tqdm(total=total, desc="training", unit="epoch") as progress:
        for gamma in args.gammas:
            for seed in range(args.seeds):
                runs.append(train(args, gamma, seed, data, progress))

    headers = [
        "gamma",
        f"test MSE @ {args.forward_cap} NFE",
        f"test MSE @ rel {TOL:g}",
        f"mean NFE to rel {TOL:g}",
        "NFE, all 1000 points",
        "mean \\|\\|J\\|\\|_F",
        "mean rho(J)",
        f"points not at {TOL:g} in {MEASURE_CAP} NFE (all seeds)",
        "train s",
    ]
    table = markdown_table(headers, summarize(runs, args.gammas))
    print("\n" + table)
    settings = (
        f"Settings: 4096 train / 1000 test points, x ~ U{tuple(args.x_range)}, noise std 0.05; "
        f"state {args.width}, hidden {args.hidden}; Anderson, train caps {args.forward_cap} "
        f"forward / {args.backward_cap} backward (implicit), penalty p = {args.p}, 1 probe; "
        f"Adam lr {args.lr} cosine, batch {args.batch}, {args.epochs} epochs; "
        f"targets standardized for training; {args.seeds} seed(s) (mean ± std). NFE measured "
        f"in eval mode with Anderson up to "
        f"{MEASURE_CAP} evaluations, per test point (a point that never gets there counts "
        f"{MEASURE_CAP + 1}). Machine: {environment(args.threads)}."
    )
    args.out.mkdir(parents=True, exist_ok=True)
    plot(runs, args.gammas, args.out / "synthetic.png")
    write_markdown(
        args.out / "synthetic.md",
        "Jacobian regularization on the synthetic regression task",
        [table, settings, "![convergence, NFE and ||J|| over training](synthetic.png)"],
    )
    print(f"\n{settings}\nwrote {args.out / 'synthetic.md'} and {args.out / 'synthetic.png'}")


if __name__ == "__main__":
    main()
