"""The learned solver (`eq.NeuralSolver`) on the default MDEQ, against the classical solvers.

See `benchmarks.neural_solvers` for what is trained and measured; this part runs it and turns the
results into a report section with the residual-vs-NFE and accuracy-vs-NFE plots.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..config import BenchConfig
from ..neural_solvers import Settings, run
from ..plots import line_plot
from ..registry import register
from ..report import Check, Column, Figure, Section, Table

NFE_TARGET = 2.0  # at least 2x fewer evaluations than the best classical solver
TIME_TARGET = 1.5  # and 1.5x less time
SIZE_TARGET = 0.03  # the solver is at most 3% of the model
CLASSICAL = ("picard", "anderson", "broyden")


@register(
    "neural",
    "Learned solver: initializer + learned Anderson updates on the MDEQ",
    order=230,
    requires=("sklearn", "matplotlib"),
)
def run_part(config: BenchConfig) -> Section:
    if config.device != "cpu":
        raise ValueError("the neural solver benchmark runs on the CPU only")
    settings = Settings.quick() if config.quick else Settings()
    results = run(config.out / "neural", settings, log=lambda text: None, seed=config.seed)
    return render(results, config.out)


def _mean(values: list[int]) -> float:
    return sum(values) / len(values)


def parity_check(r: dict) -> Check:
    """At the converged accuracy: NFE and time of the neural solver against the classical best."""
    target = (
        f"at the fully converged accuracy: at least {NFE_TARGET:g}x fewer NFE and "
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


def render(r: dict, out: Path) -> Section:
    """The report section for the results of `benchmarks.neural_solvers.run`."""
    targets = [f"{t:g}" for t in r["targets"]]
    head = f"{r['headline']:g}"
    share = r["solver_parameters"] / r["model_parameters"]
    section = Section(
        name="neural",
        title="Learned solver on the default MDEQ (digits)",
        summary=(
            "The MDEQ from `equilibria train` is frozen and an `eq.NeuralSolver` is trained on "
            "the DEQ inputs of training images (no labels): fixed points from a long Anderson "
            "solve, the initializer fitted to them alone first, then K unrolled learned steps "
            "with a loss on every step. Held-out test images; 'initializer + anderson' is the "
            "learned initial guess followed by classical Anderson (no learned steps). NFE counts "
            "every cell evaluation, the safeguard's too, plus the initializer's FLOPs as a "
            "fraction of one evaluation."
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
            "test": f"{r['test_samples']} images, cap {r['cap']} evaluations",
            "timing": f"{r['clock']} time, torch {r['torch']}, {r['threads']} thread(s)",
        },
    )
    table = Table(
        "Evaluations to a relative residual (held-out)",
        [Column("solver", "solver")]
        + [Column(f"s{t}", f"median NFE per sample to {t}", ".2f") for t in targets]
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
    accuracy = Table(
        f"Test accuracy % at a fixed NFE budget (fully converged: "
        f"{100 * r['converged_accuracy']:.2f}%)",
        [Column("solver", "solver")] + [Column(f"a{b}", f"@ {b} NFE", ".2f") for b in r["budgets"]],
    )
    for name, values in r["accuracy"].items():
        accuracy.add(
            solver=name, **{f"a{b}": 100 * a for b, a in zip(r["budgets"], values, strict=True)}
        )
    section.tables.append(accuracy)
    parity = Table(
        f"Cost to the fully converged accuracy ({100 * r['converged_accuracy']:.2f}%)",
        [
            Column("solver", "solver"),
            Column("nfe", "smallest NFE budget that matches it"),
            Column("seconds", f"{r['clock']} s, test set at that budget", ".3f"),
        ],
    )
    for name, budget in r["parity_budget"].items():
        nfe = None if budget is None else budget + r["nfe_offset"][name]
        seconds = r["parity_seconds"].get(name)
        parity.add(solver=name, nfe=None if nfe is None else f"{nfe:g}", seconds=seconds)
    section.tables.append(parity)

    best = min(CLASSICAL, key=lambda n: _mean(r["batch_nfe"][n][head]))
    neural_nfe = _mean(r["batch_nfe"]["neural"][head]) + r["nfe_offset"]["neural"]
    ratio = _mean(r["batch_nfe"][best][head]) / neural_nfe
    sample_ratio = (
        r["per_sample_median_nfe"][best][head] / r["per_sample_median_nfe"]["neural"][head]
    )
    fastest = min(CLASSICAL, key=lambda n: r["seconds"][n])
    time_ratio = r["seconds_ratio_to_neural"][fastest]
    equal = all(
        r["accuracy"]["neural"][i] >= r["accuracy"][best][i] - 0.005
        for i in range(len(r["budgets"]))
    )
    section.checks += [
        Check(
            f"at least {NFE_TARGET:g}x fewer NFE than the best classical solver ({best}) to rel "
            f"{head}",
            f"{ratio:.2f}x per batch, {sample_ratio:.2f}x per sample (median)",
            ratio >= NFE_TARGET,
        ),
        Check(
            f"at least {TIME_TARGET:g}x less time than the fastest classical solver ({fastest})",
            f"{time_ratio:.2f}x",
            time_ratio >= TIME_TARGET,
        ),
        Check(
            "accuracy at every budget no lower than the best classical solver's (0.5 points)",
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
        panels.append((f"{which} sample", "best relative residual", lines))
    plot = line_plot(out / "neural_residual_vs_nfe.png", panels, xlabel="NFE", log_y=True)
    section.figures.append(Figure(str(plot.relative_to(out)), "Held-out residual vs NFE"))
    lines = {
        name: (r["budgets"], [100 * a for a in values]) for name, values in r["accuracy"].items()
    }
    plot = line_plot(
        out / "neural_accuracy_vs_nfe.png",
        [("test accuracy", "accuracy %", lines)],
        xlabel="NFE budget",
    )
    section.figures.append(Figure(str(plot.relative_to(out)), "Test accuracy vs NFE budget"))
    if not math.isfinite(ratio):
        section.notes.append("The neural solver did not reach the headline residual.")
    return section
