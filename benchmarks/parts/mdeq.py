"""MDEQ training benchmarks, each the command line run as a user runs it.

- mdeq-digits: the default `equilibria train` (no arguments but the seed), one process per
  seed: wall time of the whole command, train seconds, test accuracy, forward NFE, and the
  accuracy-vs-NFE curve of each trained model.
- mdeq-mnist: the multiscale DEQ against explicit ResNets built from the same blocks at a
  similar parameter count, on the real MNIST test set (../shared/data) split 8004 train / 1996
  test: accuracy, training time and the memory of one training step (activations saved for
  backward, and the peak of all tensor memory).
- mdeq-block: the default digits run with and without the paper's identity shortcut in the
  branch blocks: accuracy, how fast the solves converge, accuracy at 2 NFE.
- gradients-digits: the default digits run with each training gradient (implicit, phantom,
  one-step): final test accuracy, training time and the backward's cost.

    python -m benchmarks mdeq-digits mdeq-mnist mdeq-block gradients-digits   # in the suite
    python -m benchmarks.parts.mdeq digits mnist block gradients --out results/mdeq

The second form runs them with torch's default thread count, timed by the wall clock, and
takes `--data-dir` for the MNIST files.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from ..config import BenchConfig
from ..datasets import MNIST_COMMON, SHARED_DATA, mnist_available
from ..environment import load_average
from ..plots import line_plot
from ..registry import PARTS, register
from ..report import Check, Column, Figure, Section, Table
from ..runner import command_line, run
from ..train_runs import PREVIOUS_IMAGE_BATCH, TRAINING_MODULES, run_cli, step_memory

DIGITS_TARGET_ACCURACY = 0.99
DIGITS_TARGET_SECONDS = 120.0
MNIST_ACCURACY_GAP = 0.005  # the MDEQ within half a point of the explicit net
MNIST_MEMORY_RATIO = 0.5  # at no more than half its activation memory

MNIST_MODELS = {  # name: (output folder, settings, whether the MDEQ is checked against it)
    "MDEQ": ("mdeq", ("model.arch=mdeq",), False),
    "ResNet, 4 blocks/stage (expansion 1)": (
        "resnet4",
        ("model.arch=resnet", "model.expansion=1", "model.resnet_blocks=4"),
        True,
    ),
    "ResNet, the MDEQ's blocks once each": (
        "resnet1",
        ("model.arch=resnet", "model.resnet_blocks=1"),
        True,
    ),
    "the MDEQ cell unrolled 8 times (weight-tied)": (
        "unrolled",
        ("model.arch=mdeq", "deq.pretrain_depth=8", "deq.pretrain_steps=1000000000"),
        True,
    ),
}


def digits(config: BenchConfig) -> Section:
    seeds = (0,) if config.quick else (0, 1, 2)
    section = Section(
        name="mdeq-digits",
        title="The default run: `equilibria train` on digits",
        summary=(
            "Each seed runs the command line exactly as a user would (`python -m equilibria "
            "train run.seed=S`, every other setting at its default), in its own process with "
            "torch's default thread count. 'command s' is the wall time of the whole command: "
            "start-up, data, training, the final accuracy-vs-NFE sweep, residual traces and "
            "plots. Test accuracy and NFE are measured in eval mode with the default test-time "
            "settings (Anderson, relative tolerance 1e-3, at most 12 evaluations)."
        ),
        settings={"seeds": ", ".join(map(str, seeds)), "load average before": load_average()},
    )
    table = Table(
        "Default MDEQ on digits (1442 train / 355 test)",
        [
            Column("seed", "seed"),
            Column("accuracy", "test accuracy %", ".2f"),
            Column("errors", "test errors"),
            Column("nfe", "mean forward NFE (test)", ".1f"),
            Column("train_nfe", "mean forward / backward NFE (train)"),
            Column("train_s", "train s", ".1f"),
            Column("command_s", "command s", ".1f"),
            Column("load", "load average after"),
        ],
    )
    curves: dict[str, tuple[list[float], list[float]]] = {}
    summaries = []
    for seed in seeds:
        summary, seconds = run_cli(config.out / f"digits-seed{seed}", [f"run.seed={seed}"])
        summaries.append((summary, seconds))
        table.add(
            seed=seed,
            accuracy=100 * summary["test_accuracy"],
            errors=round((1 - summary["test_accuracy"]) * summary["test_samples"]),
            nfe=summary["mean_forward_nfe"],
            train_nfe=f"{summary['train_mean_forward_nfe']:.1f} / "
            f"{summary['train_mean_backward_nfe']:.1f}",
            train_s=summary["train_seconds"],
            command_s=seconds,
            load=load_average(),
        )
        curves[f"seed {seed}"] = (
            [row["forward_nfe"] for row in summary["elastic"]],
            [100 * row["accuracy"] for row in summary["elastic"]],
        )
    section.tables.append(table)
    accuracies = [s["test_accuracy"] for s, _ in summaries]
    worst_seconds = max(seconds for _, seconds in summaries)
    mean = sum(accuracies) / len(accuracies)
    section.checks += [
        Check(
            f"test accuracy >= {100 * DIGITS_TARGET_ACCURACY:.0f}% (mean over seeds)",
            f"{100 * mean:.2f}% (lowest {100 * min(accuracies):.2f}%)",
            mean >= DIGITS_TARGET_ACCURACY,
        ),
        Check(
            f"the whole command finishes within {DIGITS_TARGET_SECONDS:.0f} s",
            f"slowest {worst_seconds:.1f} s",
            worst_seconds <= DIGITS_TARGET_SECONDS,
        ),
    ]
    sweep = summaries[0][0]["elastic"]
    section.notes.append(
        "Elastic inference, seed 0 (iteration cap: accuracy %): "
        + ", ".join(f"{r['max_iter']}: {100 * r['accuracy']:.2f}" for r in sweep)
    )
    path = line_plot(
        config.out / "mdeq_digits_accuracy_vs_nfe.png",
        [("one trained MDEQ, any test-time budget", "test accuracy %", curves)],
        xlabel="mean forward NFE per test image",
    )
    section.figures.append(Figure(path.name, "Digits: test accuracy against inference NFE"))
    return section


def evaluations_to(trace: list[float], tol: float) -> int | None:
    """The first evaluation count at which a residual trace is at or below `tol`."""
    for count, value in enumerate(trace, start=1):
        if value <= tol:
            return count
    return None


def block(config: BenchConfig) -> Section:
    """The branch block with and without the paper's identity shortcut, on digits."""
    seeds = (0,) if config.quick else (0, 1)
    variants = {"without shortcut (default)": "false", "with shortcut (NeurIPS 2020)": "true"}
    section = Section(
        name="mdeq-block",
        title="MDEQ branch block: with and without the identity shortcut",
        summary=(
            "The default digits run with `model.residual=false` (the default: conv, GroupNorm, "
            "ReLU, conv, injection, GroupNorm, ReLU) and `model.residual=true` (the paper's "
            "block: the input added back before the last ReLU, then a third GroupNorm). "
            "'Anderson evaluations to 1e-3' is the median over 256 test images of the first "
            "evaluation whose relative residual is at most 1e-3 in a 40-evaluation solve; "
            "'test residual' is the mean relative residual at the end of the test-time solve."
        ),
        settings={"seeds": ", ".join(map(str, seeds)), "load average before": load_average()},
    )
    table = Table(
        "Digits, default settings but the block",
        [
            Column("block", "branch block"),
            Column("seed", "seed"),
            Column("accuracy", "test accuracy %", ".2f"),
            Column("residual", "test residual", ".1e"),
            Column("to_tol", "Anderson evaluations to 1e-3"),
            Column("at2", "accuracy % at 2 NFE", ".2f"),
            Column("train_s", "train s", ".1f"),
        ],
    )
    for name, residual in variants.items():
        for seed in seeds:
            out = config.out / f"block-residual-{residual}-seed{seed}"
            overrides = [f"run.seed={seed}", f"model.residual={residual}", PREVIOUS_IMAGE_BATCH]
            summary, _ = run_cli(out, overrides)
            trace = summary["residual_traces"]["anderson"]["median"]
            at2 = [r["accuracy"] for r in summary["elastic"] if r["max_iter"] == 2]
            table.add(
                block=name,
                seed=seed,
                accuracy=100 * summary["test_accuracy"],
                residual=summary["test_residual"],
                to_tol=evaluations_to(trace, 1e-3),
                at2=100 * at2[0] if at2 else None,
                train_s=summary["train_seconds"],
            )
    section.tables.append(table)
    return section


# the gradients are compared without the Jacobian penalty, as they were measured
NO_PENALTY = ("deq.jacobian_gamma=0",)
GRADIENT_MODES = {  # label: deq.backward
    "implicit (adjoint solve, Anderson, cap 8)": "implicit",
    "phantom (5 damped steps, tau 0.6)": "phantom",
    "one-step (Jacobian-free)": "onestep",
}


def gradient_modes(config: BenchConfig) -> Section:
    """The default digits run with each training gradient: accuracy, time, backward cost."""
    seeds = (0,) if config.quick else (0, 1)
    quick = ["optim.epochs=3", "data.train_samples=512"] if config.quick else []
    section = Section(
        name="gradients-digits",
        title="Gradient strategies: final accuracy on digits",
        summary=(
            "The default `equilibria train` (the MDEQ on digits, 20 epochs) with only the "
            "training gradient changed (`deq.backward=...`); every run is tested with the same "
            "test-time solver settings. 'backward NFE' counts the vector-Jacobian products of "
            "the implicit backward's adjoint solve; phantom (5 damped cell applications "
            "differentiated) and one-step (one) run no solver and show 0. Every run uses one "
            "thread; train seconds are wall time on a shared machine (see the load column)."
        ),
        settings={
            "seeds": ", ".join(map(str, seeds)),
            "overrides": " ".join([*quick, *NO_PENALTY]) + " (and deq.backward, run.seed)",
            "load average before": load_average(),
        },
    )
    table = Table(
        "Digits, default settings but the training gradient",
        [
            Column("mode", "training gradient"),
            Column("seed", "seed"),
            Column("accuracy", "test accuracy %", ".2f"),
            Column("nfe", "mean forward NFE (test)", ".1f"),
            Column("train_nfe", "mean forward / backward NFE (train)"),
            Column("train_s", "train s", ".1f"),
            Column("load", "load average after"),
        ],
    )
    for label, backward in GRADIENT_MODES.items():
        for seed in seeds:
            out = config.out / f"gradients-{backward}-seed{seed}"
            overrides = [
                f"run.seed={seed}",
                f"deq.backward={backward}",
                *NO_PENALTY,
                PREVIOUS_IMAGE_BATCH,
                *quick,
            ]
            summary, _ = run_cli(out, overrides, threads=1)
            table.add(
                mode=label,
                seed=seed,
                accuracy=100 * summary["test_accuracy"],
                nfe=summary["mean_forward_nfe"],
                train_nfe=f"{summary['train_mean_forward_nfe']:.1f} / "
                f"{summary['train_mean_backward_nfe']:.1f}",
                train_s=summary["train_seconds"],
                load=load_average(),
            )
    section.tables.append(table)
    return section


def mnist(config: BenchConfig, data_dir: Path = SHARED_DATA) -> Section:
    epochs = 2 if config.quick else 6
    common = [*MNIST_COMMON, f"optim.epochs={epochs}", f"data.data_dir={data_dir}"]
    section = Section(
        name="mdeq-mnist",
        title="MDEQ against explicit ResNets on real MNIST",
        summary=(
            "The MNIST test set alone (10000 real images; every fifth image of each class held "
            "out: 8004 train / 1996 test), trained by the command line with the same recipe for "
            "every model (Adam, cosine schedule, label smoothing, random 1-pixel shifts). The "
            "explicit ResNets are built from the MDEQ's own parts (the same stem and head, "
            "branch blocks with their identity shortcut, strided transitions) at the same width "
            "and a similar parameter count: four thin blocks (expansion 1) per stage, or the "
            "MDEQ's blocks (expansion 4) once each. The last row trains the MDEQ's cell as an "
            "explicit weight-tied network of 8 applications (the same parameters and about the "
            "same compute per step as the DEQ's 8 solver iterations). Memory is that of one "
            "training step at the training batch size: activations saved for backward "
            "(parameters excluded) and the peak of all tensor memory during forward and "
            "backward (for the DEQ this includes the solver's history of past iterates)."
        ),
        settings={
            "epochs": str(epochs),
            "common settings": " ".join(common[:-1]),
            "load average before": load_average(),
        },
    )
    table = Table(
        "MNIST (8004 train / 1996 test)",
        [
            Column("model", "model"),
            Column("parameters", "parameters"),
            Column("accuracy", "test accuracy %", ".2f"),
            Column("nfe", "mean forward NFE (test)", ".1f"),
            Column("train_s", "train s", ".0f"),
            Column("saved_mb", "activations saved MB", ".2f"),
            Column("peak_mb", "peak tensor MB", ".2f"),
        ],
    )
    results = {}
    for name, (folder, overrides, _) in MNIST_MODELS.items():
        summary, _ = run_cli(config.out / f"mnist-{folder}", [*common, *overrides])
        memory = step_memory([*common, *overrides], data_dir)
        results[name] = {**summary, **memory}
        table.add(
            model=name,
            parameters=memory["parameters"],
            accuracy=100 * summary["test_accuracy"],
            nfe=summary["mean_forward_nfe"],
            train_s=summary["train_seconds"],
            saved_mb=memory["saved_mb"],
            peak_mb=memory["peak_mb"],
        )
    section.tables.append(table)
    deq = results["MDEQ"]
    for name, (_, _, explicit_net) in MNIST_MODELS.items():
        if not explicit_net:
            continue
        explicit = results[name]
        gap = explicit["test_accuracy"] - deq["test_accuracy"]
        ratio = deq["saved_mb"] / explicit["saved_mb"]
        section.checks.append(
            Check(
                f"MDEQ within {100 * MNIST_ACCURACY_GAP:.1f} point of {name} at <= "
                f"{MNIST_MEMORY_RATIO:.0%} of its activation memory",
                f"{100 * gap:+.2f} points behind, {ratio:.0%} of its activation memory",
                gap <= MNIST_ACCURACY_GAP and ratio <= MNIST_MEMORY_RATIO,
            )
        )
    return section


@register(
    "mdeq-digits", "MDEQ: the default training run on digits", order=200, requires=TRAINING_MODULES
)
def run_digits(config: BenchConfig) -> Section:
    return digits(config)


@register(
    "mdeq-mnist",
    "MDEQ against explicit ResNets on real MNIST",
    order=210,
    requires=TRAINING_MODULES,
)
def run_mnist(config: BenchConfig) -> Section:
    if not mnist_available(SHARED_DATA):
        section = Section("mdeq-mnist", "MDEQ against explicit ResNets on real MNIST")
        section.notes.append(f"Skipped: the MNIST test set is not in {SHARED_DATA}.")
        return section
    return mnist(config)


@register(
    "mdeq-block",
    "MDEQ branch block: with and without the identity shortcut",
    order=220,
    requires=TRAINING_MODULES,
)
def run_block(config: BenchConfig) -> Section:
    return block(config)


@register(
    "gradients-digits",
    "Gradient strategies: final accuracy on digits",
    order=45,
    requires=TRAINING_MODULES,
)
def run_gradient_modes(config: BenchConfig) -> Section:
    return gradient_modes(config)


# the short names of the command line below, and the parts they run
STANDALONE = {
    "digits": "mdeq-digits",
    "mnist": "mdeq-mnist",
    "block": "mdeq-block",
    "gradients": "gradients-digits",
}


def main(argv: list[str] | None = None) -> int:
    """`python -m benchmarks.parts.mdeq [digits|mnist|block|gradients ...]`: these parts alone."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.parts.mdeq", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("parts", nargs="*", help=f"any of {', '.join(STANDALONE)} (default: all)")
    parser.add_argument("--out", type=Path, default=Path("results/mdeq"))
    parser.add_argument("--quick", action="store_true", help="one seed, fewer epochs")
    parser.add_argument("--data-dir", type=Path, default=SHARED_DATA, help="MNIST files")
    args = parser.parse_args(argv)
    unknown = [name for name in args.parts if name not in STANDALONE]
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(STANDALONE)}")
    # the runs are separate processes with torch's default thread count, timed by the wall clock
    config = BenchConfig(
        quick=args.quick, out=args.out, threads=torch.get_num_threads(), wall_clock=True
    )
    selected = [PARTS[STANDALONE[name]] for name in args.parts or list(STANDALONE)]
    selected = [
        dataclasses.replace(part, run=lambda c: mnist(c, args.data_dir))
        if part.name == "mdeq-mnist"
        else part
        for part in selected
    ]
    run(selected, config, command_line("python -m benchmarks.parts.mdeq", argv))
    print(f"report written to {args.out / 'report.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
