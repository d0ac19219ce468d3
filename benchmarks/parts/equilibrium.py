"""Equilibrium kept: the default recipes at their fixed point, fixed-point reuse across epochs, and
the MDEQ against explicit ResNets of every depth on MNIST-t10k.

Every run is `equilibria train` as a user types it. "Converged" is the fraction of test (or
validation, or probe) solves below the tolerance within the test cap; the training residual is
the mean relative residual of an epoch's training solves. A residual "does not grow" when the
last epoch's is below the tolerance or at most twice the lowest epoch's.
"""

from __future__ import annotations

import json
import statistics
from functools import partial
from pathlib import Path
from typing import Any

from equilibria.training.equilibrium import training_residual

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
    step_memory,
)

# the defaults this tree changed, set back to what they were: the "previous default" rows
PREVIOUS_DEFAULTS = (*IMPLICIT_RECIPE, "deq.jacobian_p=1", "deq.max_iter=8")
DIGITS_ACCURACY = 0.992  # mean over three seeds
DIGITS_SECONDS = 60.0  # the whole default command, on the 2-core machine
CONVERGED = 0.95  # share of test solves below tolerance within the test cap
LM_RESIDUAL = 1e-2  # validation relative residual of the default language model
COMPETITIVE_TIME = 2.0  # the MDEQ in at most 2x the best explicit network's training time
COMPETITIVE_MEMORY = 0.5  # and at most half the activations of one as accurate


WALL = "wall_seconds.json"


def train(out: Path, overrides: tuple[str, ...], threads: int | None = 1) -> dict[str, Any]:
    """A run's summary with its wall seconds and epoch records (`threads` None: torch's).

    A finished run already in `out` (a benchmark run resumed with the same --out) is read, not
    repeated; its wall seconds are None unless this function recorded them."""
    if (out / "summary.json").exists():
        summary = json.loads((out / "summary.json").read_text())
        wall = json.loads((out / WALL).read_text()) if (out / WALL).exists() else None
        return {**summary, "wall_seconds": wall, "history": epoch_records(out), "read": True}
    summary, seconds = run_cli(out, ["run.progress=false", *overrides], threads=threads)
    (out / WALL).write_text(json.dumps(seconds))
    return {**summary, "wall_seconds": seconds, "history": epoch_records(out)}


def slug(text: str) -> str:
    """A folder name for a run's label."""
    return text.replace(", ", "-").replace(",", "").replace(" ", "_")


def residual_kept(result: dict[str, Any], tol: float) -> bool:
    """Whether the training residual did not grow: the last epoch's below the tolerance, or at
    most twice the lowest epoch's."""
    residuals = [training_residual(row) for row in result["history"]]
    return residuals[-1] <= max(tol, 2 * min(residuals))


# --- the default recipes -------------------------------------------------------------------


def defaults_jobs(config: BenchConfig) -> dict[str, tuple[tuple[str, ...], int | None]]:
    """name -> (overrides, threads) of the default-recipe runs."""
    quick = ("optim.epochs=2",) if config.quick else ()
    lm_quick = ("optim.epochs=2", "lm.steps_per_epoch=20") if config.quick else ()
    # the language model's default text (Python's pydoc topics), as `--task lm` trains it
    return {
        "lm, default": (("run.task=lm", *lm_quick), 1),
        "lm, previous default": (("run.task=lm", *lm_quick, *PREVIOUS_DEFAULTS), 1),
        "ssl, default": (("run.task=ssl", *quick), 1),
        "ssl, previous default": (("run.task=ssl", *quick, *PREVIOUS_DEFAULTS), 1),
    }


@register(
    "equilibrium-defaults",
    "Default recipes at equilibrium: digits, language model, contrastive",
    order=204,
    requires=TRAINING_MODULES,
)
def run_defaults(config: BenchConfig) -> Section:
    from equilibria.config import Config

    tol = Config().deq.tol
    seeds = (0,) if config.quick else (0, 1, 2)
    folder = config.out / "equilibrium-defaults"
    quick = ("optim.epochs=2",) if config.quick else ()
    # the digits command alone on the machine, with torch's threads, as a user runs it
    digits = {
        seed: train(folder / f"digits-{seed}", (*quick, f"run.seed={seed}"), threads=None)
        for seed in seeds
    }
    previous = (*PREVIOUS_DEFAULTS, PREVIOUS_IMAGE_BATCH)
    digits_previous = train(
        folder / "digits-previous", (*quick, *previous, "run.seed=0"), threads=None
    )
    others = in_pairs(
        {
            name: partial(train, folder / slug(name), overrides, threads)
            for name, (overrides, threads) in defaults_jobs(config).items()
        }
    )
    section = Section(
        "equilibrium-defaults",
        "Default recipes at equilibrium: digits, language model, contrastive",
        summary=" ".join(__doc__.split("\n\n", 1)[1].split()),
        settings={
            "digits": f"`equilibria train run.seed=S` (seeds {', '.join(map(str, seeds))}), "
            "alone on the machine with torch's threads",
            "lm, ssl": "`equilibria train --task lm|ssl`, two runs at a time, one thread each",
            "lm text": "the default (Python's pydoc topics)",
            "previous default": " ".join(PREVIOUS_DEFAULTS) + f" (digits: {PREVIOUS_IMAGE_BATCH})",
        },
    )
    runs = {
        **{f"digits, default, seed {seed}": result for seed, result in digits.items()},
        "digits, previous default": digits_previous,
        **others,
    }
    read = [name for name, result in runs.items() if result.get("read")]
    if read:  # measured by an earlier invocation into the same --out, at its own time
        section.settings["runs read from an earlier invocation"] = "; ".join(read)
    table = Table(
        "Each default recipe: quality, equilibrium and time",
        [
            Column("run", "run"),
            Column("metric", "test metric"),
            Column("converged", "test solves converged", ".1%"),
            Column("test_nfe", "test NFE", ".1f"),
            Column("first", "train residual, epoch 1", ".1e"),
            Column("peak", "peak", ".1e"),
            Column("last", "last epoch", ".1e"),
            Column("warned", "epochs warned"),
            Column("seconds", "whole command s", ".0f"),
        ],
    )

    def add(name: str, result: dict[str, Any], metric: str, converged: str, nfe: str) -> None:
        eq = result["equilibrium"]
        table.add(
            run=name,
            metric=metric,
            converged=eq[converged],
            test_nfe=result.get(nfe),
            first=eq["train_residual_first"],
            peak=eq["train_residual_max"],
            last=eq["train_residual_final"],
            warned=len(eq["warned_epochs"]),
            seconds=result["wall_seconds"],
        )

    for seed, result in digits.items():
        accuracy = f"{100 * result['test_accuracy']:.2f}% accuracy"
        add(f"digits, default, seed {seed}", result, accuracy, "test_converged", "mean_forward_nfe")
    accuracy = f"{100 * digits_previous['test_accuracy']:.2f}% accuracy"
    add("digits, previous default, seed 0", digits_previous, accuracy, "test_converged",
        "mean_forward_nfe")  # fmt: skip
    for name in ("lm, default", "lm, previous default"):
        result = others[name]
        add(name, result, f"{result['val_bpc']:.3f} bpc", "val_converged", "val_forward_nfe")
    for name in ("ssl, default", "ssl, previous default"):
        result = others[name]
        probe = f"{100 * result['probe_test_accuracy']:.2f}% probe"
        add(name, result, probe, "probe_test_converged", "probe_forward_nfe")
    section.tables.append(table)

    accuracy = mean_and_spread([r["test_accuracy"] for r in digits.values()])
    seconds = mean_and_spread([r["wall_seconds"] for r in digits.values()])
    lm, lm_before = others["lm, default"], others["lm, previous default"]
    recipes = {"digits": list(digits.values()), "lm": [lm], "ssl": [others["ssl, default"]]}
    converged_key = {
        "digits": "test_converged",
        "lm": "val_converged",
        "ssl": "probe_test_converged",
    }
    for task, runs in recipes.items():
        worst = min(r["equilibrium"][converged_key[task]] for r in runs)
        kept = all(residual_kept(r, tol) for r in runs)
        section.checks += [
            Check(
                f"{task} default: at least {CONVERGED:.0%} of test solves converge",
                f"{worst:.1%} (lowest seed)",
                worst >= CONVERGED,
            ),
            Check(
                f"{task} default: the training residual does not grow",
                "; ".join(
                    f"{r['equilibrium']['train_residual_first']:.1e} -> "
                    f"{r['equilibrium']['train_residual_final']:.1e}"
                    for r in runs
                ),
                kept,
            ),
        ]
    section.checks += [
        Check(
            f"digits default: mean test accuracy >= {100 * DIGITS_ACCURACY:.1f}% over seeds",
            f"{100 * accuracy[0]:.2f}% (sd {100 * accuracy[1]:.2f})",
            accuracy[0] >= DIGITS_ACCURACY,
        ),
        Check(
            f"digits default: the whole command within {DIGITS_SECONDS:.0f} s",
            f"{seconds[0]:.1f} s mean (sd {seconds[1]:.1f})",
            seconds[0] <= DIGITS_SECONDS,
        ),
        Check(
            f"lm default: validation residual below {LM_RESIDUAL:g} within the test cap",
            f"{lm['val_residual']:.1e}",
            lm["val_residual"] < LM_RESIDUAL,
        ),
        Check(
            "lm default: validation bits per character no worse than the previous default's",
            f"{lm['val_bpc']:.3f} vs {lm_before['val_bpc']:.3f}",
            lm["val_bpc"] <= lm_before["val_bpc"],
        ),
    ]
    return section


# --- which tool keeps the equilibrium, at what cost ----------------------------------------

TOOLKIT: dict[str, tuple[str, ...]] = {
    "nothing (previous default)": PREVIOUS_DEFAULTS,
    "training cap 16 (twice the default)": (*IMPLICIT_RECIPE, "deq.max_iter=16"),
    "Jacobian penalty, gamma 2, p 0.2": ("deq.backward=implicit", "deq.jacobian_gamma=2"),
    "Jacobian penalty, gamma 8, p 0.2": ("deq.backward=implicit", "deq.jacobian_gamma=8"),
    "jointly trained initializer": (*IMPLICIT_RECIPE, "deq.init=joint"),
    "reuse across epochs": (*IMPLICIT_RECIPE, "deq.reuse=true"),
    "one-step gradient": ("deq.jacobian_gamma=0",),
    "one-step gradient + Jacobian penalty, gamma 2, p 0.2 (default)": (),
}


@register(
    "equilibrium-toolkit",
    "Which tool keeps the default MDEQ at its fixed point, at what cost (digits)",
    order=205,
    requires=TRAINING_MODULES,
)
def run_toolkit(config: BenchConfig) -> Section:
    from equilibria.config import Config

    tol = Config().deq.tol
    seeds = (0,)  # one seed: eight recipes in the time of the other parts
    quick = ("optim.epochs=2",) if config.quick else ()
    folder = config.out / "equilibrium-toolkit"
    jobs = {
        (name, seed): partial(
            train,
            folder / slug(f"{name[:40]} {seed}"),
            (*quick, PREVIOUS_IMAGE_BATCH, *options, f"run.seed={seed}"),
        )
        for name, options in TOOLKIT.items()
        for seed in seeds
    }
    results = in_pairs(jobs)
    section = Section(
        "equilibrium-toolkit",
        "Which tool keeps the default MDEQ at its fixed point, at what cost (digits)",
        summary=(
            "The default digits command with one tool of the thesis's stability toolkit at a "
            "time (fixed-point correction is a library option, `eq.DEQ(correction=...)`, not "
            "a training setting, and is not in the table; weight normalization is on in every "
            "row). Test solves: Anderson to rel 1e-3 within the test cap of 12. 'Residual kept': "
            "the last epoch's mean training residual below the tolerance or at most twice the "
            "lowest epoch's. Runs two at a time with one thread each, so the train seconds "
            "compare across rows (the machine was shared with the other parts' runs)."
        ),
        settings={
            "seeds": ", ".join(map(str, seeds)),
            "every row": f"{PREVIOUS_IMAGE_BATCH} (the batch the table was measured at)",
            **{name: " ".join(options) or "defaults" for name, options in TOOLKIT.items()},
        },
    )
    table = Table(
        "Seed 0",
        [
            Column("tool", "tool"),
            Column("accuracy", "test accuracy %", ".2f"),
            Column("converged", "test solves converged", ".1%"),
            Column("test_nfe", "test NFE", ".1f"),
            Column("train_nfe", "train forward / backward NFE"),
            Column("last", "train residual, last epoch", ".1e"),
            Column("kept", "residual kept"),
            Column("train_s", "train s", ".0f"),
        ],
    )
    for name in TOOLKIT:
        runs = [results[(name, seed)] for seed in seeds]
        backward = statistics.fmean(r["train_mean_backward_nfe"] or 0.0 for r in runs)
        table.add(
            tool=name,
            accuracy=100 * statistics.fmean(r["test_accuracy"] for r in runs),
            converged=statistics.fmean(r["test_converged"] for r in runs),
            test_nfe=statistics.fmean(r["mean_forward_nfe"] for r in runs),
            train_nfe=f"{statistics.fmean(r['train_mean_forward_nfe'] for r in runs):.1f} / "
            f"{backward:.1f}",
            last=statistics.fmean(r["equilibrium"]["train_residual_final"] for r in runs),
            kept=all(residual_kept(r, tol) for r in runs),
            train_s=statistics.fmean(r["train_seconds"] for r in runs),
        )
    section.tables.append(table)
    return section


# --- fixed-point reuse ---------------------------------------------------------------------


def first_epoch_at(history: list[dict[str, Any]], accuracy: float) -> dict[str, Any] | None:
    """The first epoch record whose test accuracy reaches `accuracy` (None: never)."""
    return next((r for r in history if r["test_accuracy"] >= accuracy), None)


def reuse_data(config: BenchConfig) -> dict[str, tuple[str, ...]]:
    """The data sets of the reuse comparison (digits: MNIST-t10k's runs did not fit the time of
    one benchmark run beside the other parts)."""
    quick = ("optim.epochs=2",) if config.quick else ()
    return {"digits": (*quick, PREVIOUS_IMAGE_BATCH)}  # the batch its table was measured at


@register(
    "equilibrium-reuse",
    "Fixed-point reuse across epochs: evaluations per step and time to accuracy",
    order=207,
    requires=TRAINING_MODULES,
)
def run_reuse(config: BenchConfig) -> Section:
    folder = config.out / "equilibrium-reuse"
    variants = {
        "from zeros": (),
        "reuse": ("deq.reuse=true",),
        "from zeros, no augmentation": ("data.shift=0",),
        "reuse, no augmentation": ("deq.reuse=true", "data.shift=0"),
    }
    augmentations = {"digits": ("", ", no augmentation")}
    jobs = {
        (data, name): partial(train, folder / slug(f"{data} {name}"), (*d, *v))
        for data, d in reuse_data(config).items()
        for name, v in variants.items()
        if not name.endswith(", no augmentation") or ", no augmentation" in augmentations[data]
    }
    results = in_pairs(jobs)
    section = Section(
        "equilibrium-reuse",
        "Fixed-point reuse across epochs: evaluations per step and time to accuracy",
        summary=(
            "`deq.reuse=true` starts each training example's solve from its fixed point of the "
            "previous epoch (the first epoch starts from zeros). With augmentation (random "
            "1-pixel shifts, the default) the stored point belongs to another view of the "
            "image; without it, to the same input under the previous epoch's weights. "
            "Time to accuracy is the training time until the first epoch whose test accuracy "
            "reaches the target (the lower of the final accuracies of the pair, minus 0.5 "
            "point). Runs two at a time, one thread each."
        ),
        settings={data: " ".join(d) or "defaults" for data, d in reuse_data(config).items()},
    )
    table = Table(
        "With and without reuse",
        [
            Column("data", "data"),
            Column("variant", "start of training solves"),
            Column("nfe", "forward NFE per training step", ".2f"),
            Column("residual", "train residual, last epoch", ".1e"),
            Column("accuracy", "test accuracy %", ".2f"),
            Column("target", "target %", ".2f"),
            Column("time_to", "train s to target", ".0f"),
            Column("train_s", "train s", ".0f"),
        ],
    )
    for data in reuse_data(config):
        for augmented in augmentations[data]:
            cold, warm = (
                results[(data, f"from zeros{augmented}")],
                results[(data, f"reuse{augmented}")],
            )
            target = min(cold["test_accuracy"], warm["test_accuracy"]) - 0.005
            for name, result in ((f"from zeros{augmented}", cold), (f"reuse{augmented}", warm)):
                reached = first_epoch_at(result["history"], target)
                table.add(
                    data=data,
                    variant=name,
                    nfe=result["train_mean_forward_nfe"],
                    residual=result["equilibrium"]["train_residual_final"],
                    accuracy=100 * result["test_accuracy"],
                    target=100 * target,
                    time_to=None if reached is None else reached["train_seconds"],
                    train_s=result["train_seconds"],
                )
    section.tables.append(table)
    return section


# --- the MDEQ against explicit ResNets of every depth ---------------------------------------

# at the MDEQ's parameter budget (48.6k with 16 channels): blocks per stage x expansion fixed
RESNETS = {
    2: ("model.resnet_blocks=1", "model.expansion=4"),
    4: ("model.resnet_blocks=2", "model.expansion=2"),
    8: ("model.resnet_blocks=4", "model.expansion=1"),
    16: ("model.resnet_blocks=8", "model.expansion=1", "model.channels=12,12"),
}
MDEQ_RECIPE: tuple[str, ...] = ()


@register(
    "equilibrium-mnist",
    "MDEQ against explicit ResNets of 2 to 16 blocks on MNIST-t10k",
    order=208,
    requires=TRAINING_MODULES,
)
def run_mnist(config: BenchConfig) -> Section:
    section = Section(
        "equilibrium-mnist", "MDEQ against explicit ResNets of 2 to 16 blocks on MNIST-t10k"
    )
    if not mnist_available(SHARED_DATA):
        section.notes.append(f"skipped: MNIST's test files are not in {SHARED_DATA}")
        return section
    epochs = 1 if config.quick else 3
    seeds = (0,) if config.quick else (0, 1, 2)
    common = (*MNIST_COMMON, f"optim.epochs={epochs}", f"data.data_dir={SHARED_DATA}")
    models = {"MDEQ": ("model.arch=mdeq", *MDEQ_RECIPE)}
    models |= {f"ResNet, {b} blocks": ("model.arch=resnet", *o) for b, o in RESNETS.items()}
    folder = config.out / "equilibrium-mnist"
    jobs = {
        (name, seed): partial(
            train, folder / slug(f"{name} {seed}"), (*common, *options, f"run.seed={seed}")
        )
        for name, options in models.items()
        for seed in seeds
    }
    results = in_pairs(jobs)
    section.summary = (
        "The MNIST test set alone (8004 train / 1996 test), every model trained by the command "
        f"line with the same recipe ({epochs} epochs, Adam, cosine schedule, label smoothing, "
        "random 1-pixel shifts) and three seeds, two runs at a time with one thread each. The "
        "ResNets are built from the MDEQ's parts at its parameter budget (depth traded for "
        "width). Memory: activations saved for backward by one training step at the training "
        "batch size (parameters excluded)."
    )
    section.settings = {
        "common": " ".join(common),
        **{name: " ".join(options) for name, options in models.items()},
    }
    table = Table(
        "Mean (standard deviation) over seeds",
        [
            Column("model", "model"),
            Column("parameters", "parameters"),
            Column("accuracy", "test accuracy %"),
            Column("converged", "test solves converged", ".1%"),
            Column("train_s", "train s"),
            Column("saved_mb", "activations saved MB", ".2f"),
        ],
    )
    summary: dict[str, dict[str, float]] = {}
    for name, options in models.items():
        runs = [results[(name, seed)] for seed in seeds]
        accuracy = mean_and_spread([100 * r["test_accuracy"] for r in runs])
        seconds = mean_and_spread([r["train_seconds"] for r in runs])
        memory = step_memory([*common, *options], SHARED_DATA)
        summary[name] = {"accuracy": accuracy[0], "seconds": seconds[0], **memory}
        converged = [r["test_converged"] for r in runs if r.get("test_converged") is not None]
        table.add(
            model=name,
            parameters=memory["parameters"],
            accuracy=f"{accuracy[0]:.2f} ({accuracy[1]:.2f})",
            converged=statistics.fmean(converged) if converged else None,
            train_s=f"{seconds[0]:.0f} ({seconds[1]:.0f})",
            saved_mb=memory["saved_mb"],
        )
    section.tables.append(table)
    deq = summary["MDEQ"]
    explicit = {k: v for k, v in summary.items() if k != "MDEQ"}
    best_name = max(explicit, key=lambda k: explicit[k]["accuracy"])
    best = explicit[best_name]
    as_accurate = [
        k for k in RESNETS if explicit[f"ResNet, {k} blocks"]["accuracy"] >= deq["accuracy"]
    ]
    section.checks += [
        Check(
            "MDEQ mean test accuracy at least the best explicit ResNet's",
            f"{deq['accuracy']:.2f}% vs {best['accuracy']:.2f}% ({best_name})",
            deq["accuracy"] >= best["accuracy"],
        ),
        Check(
            f"MDEQ training time at most {COMPETITIVE_TIME:g}x the best ResNet's",
            f"{deq['seconds'] / best['seconds']:.2f}x ({deq['seconds']:.0f} s vs "
            f"{best['seconds']:.0f} s)",
            deq["seconds"] <= COMPETITIVE_TIME * best["seconds"],
        ),
    ]
    # the shallowest ResNet as accurate as the MDEQ; when none is, the most accurate one
    name = f"ResNet, {min(as_accurate)} blocks" if as_accurate else best_name
    ratio = deq["saved_mb"] / explicit[name]["saved_mb"]
    section.checks.append(
        Check(
            f"MDEQ activation memory at most {COMPETITIVE_MEMORY:g}x that of the shallowest "
            "ResNet as accurate (or of the most accurate, when none is)",
            f"{ratio:.2f}x ({deq['saved_mb']:.2f} MB vs {explicit[name]['saved_mb']:.2f} MB, "
            f"{name})",
            ratio <= COMPETITIVE_MEMORY,
        )
    )
    return section
