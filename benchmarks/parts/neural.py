"""The learned solver (`eq.NeuralSolver`) against the classical solvers: on the default MDEQ
(part `neural`) and on a DEQ-Transformer language model (part `neural-lm`).

See `benchmarks.neural_solvers` for what is trained and measured; these parts run it and turn
the results into a report section with the residual-vs-NFE and task-metric-vs-NFE plots.
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
    "Learned solver: initializer + learned Anderson updates on the MDEQ (digits)",
    order=230,
    requires=("sklearn", "matplotlib"),
)
def run_part(config: BenchConfig) -> Section:
    if config.device != "cpu":
        raise ValueError("the neural solver benchmark runs on the CPU only")
    settings = Settings.quick() if config.quick else Settings()
    results = run(config.out / "neural", settings, log=lambda text: None, seed=config.seed)
    return render(results, config.out)


@register(
    "neural-lm",
    "Learned solver on the DEQ-Transformer character language model",
    order=231,
    requires=("matplotlib",),
)
def run_language_part(config: BenchConfig) -> Section:
    if config.device != "cpu":
        raise ValueError("the neural solver benchmark runs on the CPU only")
    settings = Settings.language(config.quick)
    results = run(config.out / "neural-lm", settings, log=lambda text: None, seed=config.seed)
    return render(results, config.out)


def _mean(values: list[int]) -> float:
    return sum(values) / len(values)


def parity_check(r: dict) -> Check:
    """At the converged metric: NFE and time of the neural solver against the classical best."""
    target = (
        f"at the fully converged {_metric_word(r)}: at least {NFE_TARGET:g}x fewer NFE and "
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


def _metric_word(r: dict) -> str:
    return "bits per character" if r.get("task") == "lm" else "accuracy"


def _shown(r: dict, value: float) -> float:
    return r["metric"]["scale"] * value


def render(r: dict, out: Path) -> Section:
    """The report section for the results of `benchmarks.neural_solvers.run`."""
    targets = [f"{t:g}" for t in r["targets"]]
    head = f"{r['headline']:g}"
    share = r["solver_parameters"] / r["model_parameters"]
    language = r["task"] == "lm"
    per = "window" if language else "sample"
    metric = r["metric"]
    held_out = (
        "validation windows (a residual is over a whole window)" if language else "test images"
    )
    section = Section(
        name="neural-lm" if language else "neural",
        title=(
            "Learned solver on the DEQ-Transformer (character language model)"
            if language
            else "Learned solver on the default MDEQ (digits)"
        ),
        summary=(
            f"The {'DEQ-Transformer' if language else 'MDEQ'} from `equilibria train` is frozen "
            "and an `eq.NeuralSolver` is trained on the DEQ inputs of "
            f"{'training text windows' if language else 'training images'} (no labels): fixed "
            "points from a long Anderson solve, the initializer fitted to them alone first, then "
            "K unrolled learned steps with a loss on every step. Held-out "
            f"{held_out}; 'initializer + anderson' is the learned initial guess followed by "
            "classical Anderson (no learned steps). NFE counts every cell evaluation, the "
            "safeguard's too, plus the initializer's FLOPs as a fraction of one evaluation."
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
            "test": (
                f"{r['test_solves']} validation windows ({r['test_samples']} characters)"
                if language
                else f"{r['test_samples']} images"
            )
            + f", cap {r['cap']} evaluations",
            "timing": f"{r['clock']} time, torch {r['torch']}, {r['threads']} thread(s)",
        },
    )
    table = Table(
        "Evaluations to a relative residual (held-out)",
        [Column("solver", "solver")]
        + [Column(f"s{t}", f"median NFE per {per} to {t}", ".2f") for t in targets]
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
    value = _shown(r, r["converged_metric"])
    converged = f"{value:.3f} bits/char" if language else f"{value:.2f}%"
    digits = ".3f" if language else ".2f"
    by_budget = Table(
        f"{metric['name'][0].upper()}{metric['name'][1:]} at a fixed NFE budget (fully "
        f"converged: {converged})",
        [Column("solver", "solver")]
        + [Column(f"a{b}", f"@ {b} NFE", digits) for b in r["budgets"]],
    )
    for name, values in r["task_metric"].items():
        by_budget.add(
            solver=name,
            **{f"a{b}": _shown(r, v) for b, v in zip(r["budgets"], values, strict=True)},
        )
    section.tables.append(by_budget)
    parity = Table(
        f"Cost to the fully converged {_metric_word(r)} ({converged}"
        + (", within 0.1%)" if language else ")"),
        [
            Column("solver", "solver"),
            Column("nfe", "smallest NFE budget that matches it"),
            Column("seconds", f"{r['clock']} s, held-out set at that budget", ".3f"),
        ],
    )
    for name, budget in r["parity_budget"].items():
        nfe = None if budget is None else budget + r["nfe_offset"][name]
        seconds = r["parity_seconds"].get(name)
        parity.add(solver=name, nfe=None if nfe is None else f"{round(nfe, 2):g}", seconds=seconds)
    section.tables.append(parity)

    best = min(CLASSICAL, key=lambda n: _mean(r["batch_nfe"][n][head]))
    neural_nfe = _mean(r["batch_nfe"]["neural"][head]) + r["nfe_offset"]["neural"]
    ratio = _mean(r["batch_nfe"][best][head]) / neural_nfe
    sample_ratio = (
        r["per_sample_median_nfe"][best][head] / r["per_sample_median_nfe"]["neural"][head]
    )
    fastest = min(CLASSICAL, key=lambda n: r["seconds"][n])
    time_ratio = r["seconds_ratio_to_neural"][fastest]
    sign = 1 if metric["higher_is_better"] else -1
    slack = 0.005 if not language else 0.01  # half a point of accuracy, or 0.01 bits/char
    equal = all(
        sign * (r["task_metric"]["neural"][i] - r["task_metric"][best][i]) >= -slack
        for i in range(len(r["budgets"]))
    )
    section.checks += [
        Check(
            f"at least {NFE_TARGET:g}x fewer NFE than the best classical solver ({best}) to rel "
            f"{head}",
            f"{ratio:.2f}x per batch, {sample_ratio:.2f}x per {per} (median)",
            ratio >= NFE_TARGET,
        ),
        Check(
            f"at least {TIME_TARGET:g}x less time than the fastest classical solver ({fastest})",
            f"{time_ratio:.2f}x",
            time_ratio >= TIME_TARGET,
        ),
        Check(
            f"{_metric_word(r)} at every budget no worse than the best classical solver's "
            + ("(0.01 bits/char)" if language else "(0.5 points)"),
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
        panels.append((f"{which} {per}", "best relative residual", lines))
    prefix = "neural_lm" if language else "neural"
    plot = line_plot(out / f"{prefix}_residual_vs_nfe.png", panels, xlabel="NFE", log_y=True)
    section.figures.append(Figure(str(plot.relative_to(out)), "Held-out residual vs NFE"))
    lines = {
        name: (r["budgets"], [_shown(r, v) for v in values])
        for name, values in r["task_metric"].items()
    }
    name = "bits_per_char" if language else "accuracy"
    plot = line_plot(
        out / f"{prefix}_{name}_vs_nfe.png",
        [(metric["name"], metric["name"], lines)],
        xlabel="NFE budget",
    )
    section.figures.append(
        Figure(str(plot.relative_to(out)), f"{metric['name'].capitalize()} vs NFE budget")
    )
    if not math.isfinite(ratio):
        section.notes.append("The neural solver did not reach the headline residual.")
    return section
