"""Jacobian regularization on a small convolutional DEQ for scikit-learn's digits (8x8 images).

Two models with the same seed, data and settings are trained, one without the penalty
(gamma = 0) and one with it (gamma, p), and compared on the held-out test set: evaluations to a
relative residual tolerance and the spectral radius of J_f(z*) over training, then accuracy when
inference is hard-stopped after 1..6 evaluations (the shape of the ICML 2021 paper's CIFAR-10
table) and at convergence. The cell uses weight normalization and variational dropout.

    python examples/stability_digits.py                 # about 6 minutes on 2 CPU cores
    python examples/stability_digits.py --epochs 5 --seeds 1 --out /tmp/quick
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
from stability_report import environment, markdown_table, nfe_to_tolerance, write_markdown
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

import equilibria as eq

MEASURE_CAP = 60  # most evaluations allowed when measuring NFE to the tolerance
HARD_STOPS = (1, 2, 3, 4, 5, 6)


def load_digits(seed: int = 0):
    """The 1797 digits as (N, 1, 8, 8) floats in [0, 1], split 75 / 25, stratified."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    data = sklearn_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(data.target)
    train, test = train_test_split(
        torch.arange(len(labels)).numpy(), test_size=0.25, random_state=seed, stratify=data.target
    )
    return (images[train], labels[train]), (images[test], labels[test])


class DigitsCell(nn.Module):
    """f(z, x) = GN(relu(z + GN(conv2(drop(relu(GN(conv1 z))))) + x)), convolutions
    weight-normalized."""

    def __init__(self, channels: int, dropout: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 2 * channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(2 * channels, channels, 3, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(4, 2 * channels, affine=False)
        self.norm2 = nn.GroupNorm(4, channels, affine=False)
        self.norm3 = nn.GroupNorm(4, channels, affine=False)
        self.drop = eq.VariationalDropout2d(dropout)
        eq.weight_norm(self)

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        y = self.drop(F.relu(self.norm1(self.conv1(z))))
        return self.norm3(F.relu(z + self.norm2(self.conv2(y)) + x))


class DigitsDEQ(nn.Module):
    def __init__(self, args: argparse.Namespace, gamma: float) -> None:
        super().__init__()
        c = args.channels
        self.stem = nn.Sequential(nn.Conv2d(1, c, 3, padding=1), nn.GroupNorm(4, c))
        penalty = eq.JacobianPenalty(gamma=gamma, p=args.p) if gamma > 0 else None
        self.deq = eq.DEQ(
            DigitsCell(c, args.dropout),
            "anderson",
            tol=args.tol,
            max_iter=args.forward_cap,
            backward=eq.Implicit(max_iter=args.backward_cap),
            on_failure="ignore",
            jacobian_penalty=penalty,
        )
        self.head = nn.Linear(c * 64, 10)

    def forward(self, images: torch.Tensor, **solve: object) -> torch.Tensor:
        return self.head(self.deq(self.stem(images), **solve).flatten(1))


@torch.no_grad()
def evaluate(model: DigitsDEQ, images: torch.Tensor, labels: torch.Tensor, tol: float) -> dict:
    """Accuracy at convergence, NFE to `tol` per sample and the spectral radius (eval mode)."""
    model.eval()
    logits = model(images, max_iter=MEASURE_CAP, tol=tol)
    stats = model.deq.stats
    nfe = nfe_to_tolerance(stats.forward, tol).float()
    x = model.stem(images[:128])
    rho = eq.spectral_radius(lambda v: model.deq.cell(v, x), stats.forward.z[:128], iters=40)
    model.train()
    return {
        "accuracy": float((logits.argmax(1) == labels).float().mean()) * 100,
        "nfe_mean": float(nfe.mean()),
        "nfe_all": int(nfe.max()),
        "rho": float(rho.mean()),
    }


@torch.no_grad()
def hard_stop_accuracy(model: DigitsDEQ, images: torch.Tensor, labels: torch.Tensor) -> list:
    model.eval()
    out = []
    for cap in HARD_STOPS:
        logits = model(images, max_iter=cap, tol=0.0)
        out.append(float((logits.argmax(1) == labels).float().mean()) * 100)
    model.train()
    return out


def train(args, gamma: float, seed: int, data, progress: tqdm) -> dict:
    torch.manual_seed(seed)
    (x_train, y_train), (x_test, y_test) = data
    model = DigitsDEQ(args, gamma)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    steps = args.epochs * math.ceil(len(x_train) / args.batch)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    history, train_nfe, start = [], [], time.perf_counter()
    for epoch in range(args.epochs):
        order = torch.randperm(len(x_train))
        for i in range(0, len(x_train), args.batch):
            index = order[i : i + args.batch]
            loss = F.cross_entropy(model(x_train[index]), y_train[index])
            (loss + model.deq.stats.jacobian_loss).backward()
            train_nfe.append(model.deq.stats.forward_nfe)
            optimizer.step()
            optimizer.zero_grad()
            schedule.step()
        if (epoch + 1) % args.eval_every == 0 or epoch + 1 == args.epochs:
            history.append({"epoch": epoch + 1, **evaluate(model, x_test, y_test, args.tol)})
        progress.update(1)
        progress.set_postfix(gamma=gamma, seed=seed, loss=f"{loss.item():.3f}")
    seconds = time.perf_counter() - start
    return {
        **history[-1],
        "gamma": gamma,
        "seed": seed,
        "seconds": seconds,
        "train_nfe": sum(train_nfe) / len(train_nfe),
        "hard_stops": hard_stop_accuracy(model, x_test, y_test),
        "history": history,
    }


def mean_std(values: list[float], fmt: str) -> str:
    t = torch.tensor(values, dtype=torch.float64)
    if len(t) == 1:
        return format(float(t[0]), fmt)
    return f"{format(float(t.mean()), fmt)} ± {format(float(t.std()), fmt)}"


def tables(runs: list[dict], gammas: list[float], tol: float) -> tuple[str, str]:
    rows, stops = [], []
    for gamma in gammas:
        group = [r for r in runs if r["gamma"] == gamma]

        def col(key, fmt, group=group):
            return mean_std([r[key] for r in group], fmt)

        rows.append(
            [
                gamma,
                col("accuracy", ".1f"),
                col("nfe_mean", ".1f"),
                col("nfe_all", ".1f"),
                col("rho", ".3f"),
                col("train_nfe", ".1f"),
                col("seconds", ".0f"),
            ]
        )
        stops.append(
            [gamma]
            + [mean_std([r["hard_stops"][k] for r in group], ".1f") for k in range(len(HARD_STOPS))]
        )
    summary = markdown_table(
        [
            "gamma",
            "test accuracy % (converged)",
            f"mean NFE to rel {tol:g}",
            "NFE, all test images",
            "mean rho(J_f(z*))",
            "mean train NFE",
            "train s",
        ],
        rows,
    )
    hard = markdown_table(["gamma"] + [f"acc. % @ {n} NFE" for n in HARD_STOPS], stops)
    return summary, hard


def plot(runs: list[dict], gammas: list[float], tol: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    palette = ["tab:red", "tab:orange", "tab:blue", "tab:green", "tab:purple"]
    colors = dict(zip(gammas, palette, strict=False))
    for run in runs:
        color = colors.get(run["gamma"], "tab:grey")
        label = f"gamma={run['gamma']}" if run["seed"] == 0 else None
        epochs = [h["epoch"] for h in run["history"]]
        axes[0].plot(epochs, [h["nfe_mean"] for h in run["history"]], color=color, label=label)
        axes[1].plot(epochs, [h["rho"] for h in run["history"]], color=color, label=label)
        axes[2].plot(HARD_STOPS, run["hard_stops"], "o-", color=color, label=label)
    axes[0].set(xlabel="epoch", ylabel=f"mean NFE to rel. residual {tol:g}", title="solve cost")
    axes[1].set(xlabel="epoch", ylabel="mean spectral radius of J_f(z*)", title="stability")
    axes[2].set(xlabel="NFE (hard stop)", ylabel="test accuracy %", title="accuracy vs budget")
    for ax in axes:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("results/stability"))
    parser.add_argument("--gammas", type=float, nargs="+", default=[0.0, 1.0, 8.0])
    parser.add_argument("--p", type=float, default=0.2, help="probability of the penalty a step")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--eval-every", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--dropout", type=float, default=0.05)
    parser.add_argument("--tol", type=float, default=1e-3, help="relative residual tolerance")
    parser.add_argument("--forward-cap", type=int, default=30)
    parser.add_argument("--backward-cap", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = load_digits()
    runs = []
    with tqdm(
        total=len(args.gammas) * args.seeds * args.epochs, desc="training", unit="epoch"
    ) as bar:
        for seed in range(args.seeds):
            for gamma in args.gammas:
                runs.append(train(args, gamma, seed, data, bar))

    summary, hard = tables(runs, args.gammas, args.tol)
    print("\n" + summary + "\n\n" + hard)
    settings = (
        f"Settings: scikit-learn digits, {len(data[0][1])} train / {len(data[1][1])} test images "
        f"(stratified, split seed 0); conv DEQ with {args.channels} channels (weight norm, "
        f"variational dropout {args.dropout}); Anderson, rel tol {args.tol:g}, train caps "
        f"{args.forward_cap} forward / {args.backward_cap} backward (implicit); penalty p = "
        f"{args.p}, 1 probe; Adam lr {args.lr:g} cosine, batch {args.batch}, {args.epochs} "
        f"epochs; {args.seeds} seed(s) (mean ± std). NFE and accuracy measured in eval mode, "
        f"NFE per test image with up to {MEASURE_CAP} evaluations; spectral radius on 128 test "
        f"images by block power iteration. Machine: {environment(args.threads)}."
    )
    args.out.mkdir(parents=True, exist_ok=True)
    plot(runs, args.gammas, args.tol, args.out / "digits.png")
    write_markdown(
        args.out / "digits.md",
        "Jacobian regularization on a convolutional DEQ for digits",
        [summary, hard, settings, "![NFE, spectral radius and hard-stop accuracy](digits.png)"],
    )
    print(f"\n{settings}\nwrote {args.out / 'digits.md'} and {args.out / 'digits.png'}")


if __name__ == "__main__":
    main()
