"""Convergence by construction and a jointly trained start: today's MDEQ, the monotone-operator
DEQ and the MDEQ with a jointly trained initializer, trained by the command line.

Each model is trained by `equilibria train` with the same recipe (Adam, cosine schedule, label
smoothing, random 1-pixel shifts) and three seeds. Test solves run to the training tolerance
(rel 1e-3) with a cap of 100 evaluations, so their mean NFE is the NFE to the tolerance. The
fraction of training solves below their tolerance is averaged over every training step. The
MDEQs train with the default recipe (Anderson, cap 8, the one-step gradient and the Jacobian
penalty); the monotone model (margin m = 1) with implicit gradients and Peaceman-Rachford both
ways, at the default step size, which follows the trained operator (caps 100; each
iteration counts two evaluations: the resolvent and the map), no penalty.
"""

from __future__ import annotations

import statistics
from functools import partial
from pathlib import Path
from typing import Any

from ..config import BenchConfig
from ..datasets import MNIST_COMMON, SHARED_DATA, mnist_available
from ..registry import register
from ..report import Check, Column, Section, Table
from ..train_runs import (
    IMPLICIT_RECIPE,
    PREVIOUS_IMAGE_BATCH,
    TRAINING_MODULES,
    epoch_records,
    in_pairs,
    mean_and_spread,
    run_cli,
)

TEST_CAP = (
    "deq.eval_max_iter=100",
    "run.sweep=1",
    "run.progress=false",
    "run.threads=1",
)
MODELS: dict[str, tuple[str, ...]] = {
    "MDEQ": ("model.arch=mdeq",),
    # the splitting converges for every parameter value, at a rate set by L / m
    # (L = ||I - W||): the margin 1 keeps L / m small as training grows L, where the paper's
    # 0.05 lets the training solves slow down to their cap
    "monotone DEQ": (
        "model.arch=monotone",
        "model.monotone_margin=1",
        "deq.solver=peaceman_rachford",
        "deq.max_iter=100",
        *IMPLICIT_RECIPE,  # the adjoint by the splitting, which converges for every weight
        "deq.backward_max_iter=100",
    ),
    "MDEQ + joint initializer": ("model.arch=mdeq", "deq.init=joint"),
}
MONOTONE_GAP = 0.01  # accuracy within 1 point of the MDEQ's
INIT_NFE_RATIO = 2.0  # the initializer cuts the NFE to the tolerance at least 2x
INIT_TIME_RATIO = 1.3  # and the training time at least 1.3x


def datasets(config: BenchConfig) -> dict[str, tuple[str, ...]]:
    """The data sets measured, with their settings (MNIST-t10k when its files are present)."""
    epochs = 2 if config.quick else 10
    found = {"digits": (f"optim.epochs={epochs}", PREVIOUS_IMAGE_BATCH)}
    if not config.quick and mnist_available(SHARED_DATA):
        mnist = [o for o in MNIST_COMMON if not o.startswith(("run.sweep", "run.progress"))]
        found["MNIST-t10k"] = (*mnist, "optim.epochs=3", f"data.data_dir={SHARED_DATA}")
    return found


def train_one(out: Path, overrides: tuple[str, ...]) -> dict[str, Any]:
    """One training run's summary, with the mean fraction of converged training solves."""
    summary, _ = run_cli(out, [*overrides, *TEST_CAP])
    rows = epoch_records(out)
    summary["train_converged_mean"] = statistics.fmean(r["train_converged"] for r in rows)
    return summary


@register(
    "convergence",
    "Convergence by construction and a jointly trained start",
    order=215,
    requires=TRAINING_MODULES,
)
def run(config: BenchConfig) -> Section:
    seeds = (0,) if config.quick else (0, 1, 2)
    section = Section("convergence", "Convergence by construction and a jointly trained start")
    section.summary = " ".join(__doc__.split("\n\n", 1)[1].split())
    jobs = {
        (data, model, seed): (*data_options, *options, f"run.seed={seed}")
        for data, data_options in datasets(config).items()
        for model, options in MODELS.items()
        for seed in seeds
    }
    folder = config.out / "convergence"
    # two runs at a time on two cores, one thread each: every model shares the machine alike
    results = in_pairs(
        {
            key: partial(train_one, folder / "-".join(map(str, key)).replace(" ", "_"), o)
            for key, o in jobs.items()
        }
    )
    section.settings = {
        "seeds": ", ".join(map(str, seeds)),
        "runs": "two at a time, one thread each",
        **{f"{data}": " ".join(options) for data, options in datasets(config).items()},
        **{f"{model}": " ".join(options) for model, options in MODELS.items()},
    }
    table = Table(
        "Mean (standard deviation) over seeds",
        [
            Column("data", "data"),
            Column("model", "model"),
            Column("parameters", "parameters"),
            Column("accuracy", "test accuracy %"),
            Column("nfe", "test NFE to rel 1e-3"),
            Column("test_converged", "test solves converged", ".1%"),
            Column("train_converged", "training solves converged", ".1%"),
            Column("train_s", "train s"),
        ],
    )
    summary: dict[tuple[str, str], dict[str, float]] = {}
    for data in datasets(config):
        for model in MODELS:
            runs = [results[(data, model, seed)] for seed in seeds]
            acc = mean_and_spread([100 * r["test_accuracy"] for r in runs])
            nfe = mean_and_spread([r["mean_forward_nfe"] for r in runs])
            seconds = mean_and_spread([r["train_seconds"] for r in runs])
            summary[(data, model)] = {"accuracy": acc[0], "nfe": nfe[0], "seconds": seconds[0]}
            table.add(
                data=data,
                model=model,
                parameters=runs[0]["parameters"],
                accuracy=f"{acc[0]:.2f} ({acc[1]:.2f})",
                nfe=f"{nfe[0]:.1f} ({nfe[1]:.1f})",
                test_converged=statistics.fmean(r["test_converged"] for r in runs),
                train_converged=statistics.fmean(r["train_converged_mean"] for r in runs),
                train_s=f"{seconds[0]:.0f} ({seconds[1]:.0f})",
            )
            if model == "monotone DEQ":
                converged = min(r["train_converged_mean"] for r in runs)
                section.checks.append(
                    Check(
                        f"{data}: every training solve of the monotone DEQ converges",
                        f"{converged:.2%} of training solves below tolerance (lowest seed)",
                        converged == 1.0,
                    )
                )
    section.tables.append(table)
    for data in datasets(config):
        mdeq = summary[(data, "MDEQ")]
        mono = summary[(data, "monotone DEQ")]
        joint = summary[(data, "MDEQ + joint initializer")]
        gap = (mdeq["accuracy"] - mono["accuracy"]) / 100
        nfe_ratio = mdeq["nfe"] / joint["nfe"]
        time_ratio = mdeq["seconds"] / joint["seconds"]
        section.checks += [
            Check(
                f"{data}: monotone DEQ within {100 * MONOTONE_GAP:.0f} point of the MDEQ",
                f"{mono['accuracy']:.2f}% vs {mdeq['accuracy']:.2f}%",
                gap <= MONOTONE_GAP,
            ),
            Check(
                f"{data}: joint initializer cuts the test NFE to the tolerance "
                f"{INIT_NFE_RATIO:g}x at no loss of accuracy",
                f"{nfe_ratio:.2f}x fewer NFE ({joint['nfe']:.1f} vs {mdeq['nfe']:.1f}); "
                f"{joint['accuracy']:.2f}% vs {mdeq['accuracy']:.2f}%",
                nfe_ratio >= INIT_NFE_RATIO and joint["accuracy"] >= mdeq["accuracy"],
            ),
            Check(
                f"{data}: joint initializer cuts the training time {INIT_TIME_RATIO:g}x",
                f"{time_ratio:.2f}x ({joint['seconds']:.0f} s vs {mdeq['seconds']:.0f} s)",
                time_ratio >= INIT_TIME_RATIO,
            ),
        ]
    return section
