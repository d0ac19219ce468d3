"""Training recipes of the digits MDEQ side by side: one-step, implicit and reversible gradients,
each with and without the Jacobian penalty, over three seeds.

Every run is the default `equilibria train` (the multiscale DEQ on scikit-learn digits) with the
recipe's overrides and one thread, one run at a time. "Converged" is the fraction of test solves
below the tolerance within the test cap; the training residual is the mean relative residual of
an epoch's training solves, and it "does not grow" when the last epoch's is below the tolerance
or at most twice the lowest epoch's. Means are over seeds, with their standard error.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from ..config import BenchConfig
from ..registry import register
from ..report import Check, Column, Section, Table
from ..train_runs import IMPLICIT_RECIPE, TRAINING_MODULES, step_memory
from .equilibrium import CONVERGED, residual_kept, slug, train

# the reversible iteration spends one evaluation on f(z_0), then two per coupled step, within
# deq.max_iter evaluations: a cap of 9 is 4 steps, against the one-step default's Anderson cap 8
REVERSIBLE_CAP = "deq.max_iter=9"
DEFAULT = "one-step + penalty (default)"
RECIPES: dict[str, tuple[str, ...]] = {
    DEFAULT: (),
    "one-step": ("deq.jacobian_gamma=0",),
    "implicit": IMPLICIT_RECIPE,
    "implicit + penalty": ("deq.backward=implicit",),
    "reversible": ("deq.backward=reversible", "deq.jacobian_gamma=0", REVERSIBLE_CAP),
    "reversible + penalty": ("deq.backward=reversible", REVERSIBLE_CAP),
}
# run after the others: without them the table still compares the three gradients
LATER = ("one-step", "implicit + penalty", "reversible + penalty")
# (without the penalty, with it): the pairs the penalty's test-NFE target compares
PENALTY_PAIRS = (("one-step", DEFAULT), ("reversible", "reversible + penalty"))
DIGITS_ACCURACY = 0.993  # the default's mean test accuracy over seeds
PENALTY_NFE_RATIO = 1.5  # test NFE without the penalty over test NFE with it
EQUAL_ACCURACY = 0.01  # "equal accuracy": mean test accuracies within one point


def mean_and_error(values: list[float]) -> tuple[float, float]:
    """The mean of `values` and its standard error (0 for one value)."""
    if len(values) < 2:
        return statistics.fmean(values), 0.0
    return statistics.fmean(values), statistics.stdev(values) / math.sqrt(len(values))


def per_step(result: dict[str, Any], key: str) -> float:
    """The mean over epochs of a per-step training statistic of `metrics.jsonl`."""
    return statistics.fmean(row[key] or 0.0 for row in result["history"])


def measures(result: dict[str, Any]) -> dict[str, float]:
    """What the tables show of one run."""
    eq = result["equilibrium"]
    return {
        "accuracy": 100 * result["test_accuracy"],
        "converged": result["test_converged"],
        "test_nfe": result["mean_forward_nfe"],
        "first": eq["train_residual_first"],
        "last": eq["train_residual_final"],
        "forward": per_step(result, "train_forward_nfe"),
        "backward": per_step(result, "train_backward_nfe"),
        "train_s": result["train_seconds"],
    }


def recipe_memory(options: tuple[str, ...], data_dir: Path) -> dict[str, Any]:
    """Activations saved for backward and peak tensor bytes of one training step on a training
    batch; with the penalty, of a step that computes it (`deq.jacobian_p=1`)."""
    penalty = "deq.jacobian_gamma=0" not in options
    return step_memory([*options, *(("deq.jacobian_p=1",) if penalty else ())], data_dir)


def spread(values: list[float], fmt: str) -> str:
    mean, error = mean_and_error(values)
    return f"{mean:{fmt}} ± {error:{fmt}}"


@register(
    "recipes",
    "Training recipes of the digits MDEQ: gradient and Jacobian penalty, over seeds",
    order=206,
    requires=TRAINING_MODULES,
)
def run_recipes(config: BenchConfig) -> Section:
    from equilibria.config import Config

    defaults = Config()
    tol = defaults.deq.tol
    data_dir = Path(defaults.data.data_dir).expanduser()
    seeds = config.seed_list(1 if config.quick else 3)
    quick = ("optim.epochs=2",) if config.quick else ()
    folder = config.out / "recipes"
    results = {  # one run at a time, one thread each
        (name, seed): train(
            folder / slug(f"{name.removesuffix(' (default)').replace(' + ', '-')} {seed}"),
            (*quick, *options, f"run.seed={seed}"),
            threads=1,
        )
        for name, options in sorted(RECIPES.items(), key=lambda item: item[0] in LATER)
        for seed in seeds
    }
    section = Section(
        "recipes",
        "Training recipes of the digits MDEQ: gradient and Jacobian penalty, over seeds",
        summary=" ".join(__doc__.split("\n\n", 1)[1].split())
        + " Test solves: the training solver (Anderson; the reversible iteration for reversible "
        "recipes) to rel 1e-3 within the test cap of 12 evaluations. Forward NFE per step: the "
        "training solves' evaluations; backward NFE per step: `train_backward_nfe` of "
        "metrics.jsonl (the adjoint solve's evaluations for implicit, the rebuild's for "
        "reversible, none for one-step). Memory: one training step on a training batch, "
        "parameters excluded; with the penalty, a step that draws it (p = 1, the worst step).",
        settings={
            "seeds": ", ".join(map(str, seeds)),
            "every run": " ".join(("run.threads=1", *quick)) + " (one run at a time)",
            **{name: " ".join(options) or "defaults" for name, options in RECIPES.items()},
        },
    )
    read = [f"{name}, seed {seed}" for (name, seed), r in results.items() if r.get("read")]
    if read:  # measured by an earlier invocation into the same --out, at its own time
        section.settings["runs read from an earlier invocation"] = "; ".join(read)

    summary = Table(
        f"Mean ± standard error over seeds {', '.join(map(str, seeds))}",
        [
            Column("recipe", "recipe"),
            Column("accuracy", "test accuracy %"),
            Column("converged", "test solves converged"),
            Column("test_nfe", "test NFE"),
            Column("residual", "train residual, epoch 1 -> last"),
            Column("kept", "residual kept (all seeds)"),
            Column("forward", "train forward NFE / step", ".2f"),
            Column("backward", "train backward NFE / step", ".2f"),
            Column("train_s", "train s"),
            Column("saved_mb", "step: saved MB", ".2f"),
            Column("peak_mb", "step: peak MB", ".2f"),
        ],
    )
    seeds_table = Table(
        "Per seed",
        [
            Column("recipe", "recipe"),
            Column("seed", "seed"),
            Column("accuracy", "test accuracy %", ".2f"),
            Column("converged", "test solves converged", ".1%"),
            Column("test_nfe", "test NFE", ".2f"),
            Column("first", "train residual, epoch 1", ".1e"),
            Column("last", "last epoch", ".1e"),
            Column("kept", "residual kept"),
            Column("forward", "train forward NFE / step", ".2f"),
            Column("backward", "train backward NFE / step", ".2f"),
            Column("train_s", "train s", ".1f"),
        ],
    )
    found: dict[str, dict[str, Any]] = {}
    for name, options in RECIPES.items():
        runs = [results[(name, seed)] for seed in seeds]
        rows = [measures(r) for r in runs]
        kept = [residual_kept(r, tol) for r in runs]
        for seed, row, ok in zip(seeds, rows, kept, strict=True):
            seeds_table.add(recipe=name, seed=seed, kept=ok, **row)
        column = {key: [row[key] for row in rows] for key in rows[0]}
        memory = recipe_memory((*quick, *options), data_dir)
        found[name] = {
            "accuracy": mean_and_error(column["accuracy"]),
            "test_nfe": mean_and_error(column["test_nfe"]),
            "converged": column["converged"],
            "kept": kept,
            "runs": runs,
        }
        summary.add(
            recipe=name,
            accuracy=spread(column["accuracy"], ".2f"),
            converged=spread([100 * c for c in column["converged"]], ".1f") + " %",
            test_nfe=spread(column["test_nfe"], ".2f"),
            residual=f"{statistics.fmean(column['first']):.1e} -> "
            f"{statistics.fmean(column['last']):.1e}",
            kept=all(kept),
            forward=statistics.fmean(column["forward"]),
            backward=statistics.fmean(column["backward"]),
            train_s=spread(column["train_s"], ".1f"),
            saved_mb=memory["saved_mb"],
            peak_mb=memory["peak_mb"],
        )
    section.tables += [summary, seeds_table]
    section.checks += judge(found)
    return section


def judge(found: dict[str, dict[str, Any]]) -> list[Check]:
    """The targets, from each recipe's accuracy (mean, standard error, in %), test NFE (mean,
    standard error), converged fractions and residual verdicts per seed, and runs."""
    checks = []
    for name, f in found.items():
        worst = min(f["converged"])
        checks.append(
            Check(
                f"{name} keeps its equilibrium: at least {CONVERGED:.0%} of test solves "
                "converge (every seed) and the training residual does not grow",
                f"{worst:.1%} converged (lowest seed); residual "
                + "; ".join(
                    f"{r['equilibrium']['train_residual_first']:.1e} -> "
                    f"{r['equilibrium']['train_residual_final']:.1e}"
                    for r in f["runs"]
                ),
                worst >= CONVERGED and all(f["kept"]),
            )
        )
    mean, error = found[DEFAULT]["accuracy"]
    checks.append(
        Check(
            f"digits default: mean test accuracy >= {100 * DIGITS_ACCURACY:.1f}% over seeds",
            f"{mean:.2f}% ± {error:.2f}",
            mean >= 100 * DIGITS_ACCURACY,
        )
    )
    best = max(found, key=lambda name: found[name]["accuracy"][0])
    best_mean, best_error = found[best]["accuracy"]
    margin = max(error, best_error)
    checks.append(
        Check(
            "the default reaches, within one standard error (the larger of the two), the best "
            "mean test accuracy of any recipe",
            f"{mean:.2f}% ± {error:.2f} vs {best_mean:.2f}% ± {best_error:.2f} ({best})",
            best_mean - mean <= margin,
        )
    )
    for without, with_penalty in PENALTY_PAIRS:
        if without not in found or with_penalty not in found:
            continue
        nfe_without, nfe_with = found[without]["test_nfe"][0], found[with_penalty]["test_nfe"][0]
        acc_without, acc_with = found[without]["accuracy"][0], found[with_penalty]["accuracy"][0]
        ratio = nfe_without / nfe_with
        equal = abs(acc_without - acc_with) <= 100 * EQUAL_ACCURACY
        checks.append(
            Check(
                f"the Jacobian penalty ({without}): test NFE at least {PENALTY_NFE_RATIO:g}x "
                f"fewer with it, at equal accuracy (within {100 * EQUAL_ACCURACY:g} point)",
                f"{ratio:.2f}x ({nfe_without:.2f} -> {nfe_with:.2f} NFE); accuracy "
                f"{acc_without:.2f}% -> {acc_with:.2f}%",
                ratio >= PENALTY_NFE_RATIO and equal,
            )
        )
    return checks
