"""Equilibrium reasoning: harder puzzles by iterating longer.

Per family and seed, `equilibria train --task puzzles puzzles.family=F` as a user runs it (the
task's defaults, so retuned defaults flow through), and its two explicit baselines at the same
steps: the feed-forward stack (`puzzles.network=feedforward`, width matched to the DEQ's
parameters) and the weight-tied cell backpropagated through its training depth
(`puzzles.network=tied`). From each DEQ run's summary: accuracy per test size at the test cap,
the depth sweep, breadth on the hardest split, training time and equilibrium. Each trained model
is then loaded and scored again in-process: the DEQ at 10x the sweep's best cap (does it
overthink?), the tied network at its training depth and at 10x it, harder sizes. On mazes, the
memory of one training step: the DEQ (its default gradient) at several training caps against
the tied network backpropagated through as many applications.

    python -m benchmarks puzzles    # in the suite (--quick: one seed, 2 epochs, no timed run)
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from equilibria.config.puzzles import FAMILIES, PuzzlesConfig
from equilibria.puzzles.data import FAMILIES as PUZZLE_FAMILIES
from equilibria.puzzles.families import family_spec

from ..config import BenchConfig
from ..puzzle_runs import analyzed, linear_fit, memory_scan, train
from ..registry import register
from ..report import Check, Column, Figure, Section, Table
from ..train_runs import TRAINING_MODULES, in_pairs, mean_and_spread

NAME = "puzzles"
TITLE = "Equilibrium reasoning: harder puzzles by iterating longer"
NETWORKS = ("deq", "tied", "feedforward")
LABELS = {"deq": "DEQ", "tied": "tied", "feedforward": "feed-forward"}

PREFIX_SIZES = (32, 128, 512)
PREFIX_ACCURACY = 0.99
PREFIX_BASELINE = (128, 0.05)  # the feed-forward baseline at most 5% at 128 bits
TRAIN_SECONDS = 300.0  # prefix sums trains within 5 minutes; the default command too
MAZE_ACCURACY = ((1, 0.95), (2, 0.90), (3, 0.75))  # at about k x the training size
MAZE_BASELINES = (2, 0.20)  # both baselines at most 20% at about 2n
SUDOKU_TRAINED = 0.90
SUDOKU_FEWER = (10, 0.50)  # 10 fewer givens: at least 50% with depth and breadth
FAR_BELOW = (0.5, 0.20)  # feed-forward at most half the DEQ's and 20 points below it
OVERTHINKING = 0.01  # at 10x the best cap, within 1 point of the best accuracy
BREADTH_GAIN = 0.03  # 8 starts kept by residual gain 3 points over 1 start
FLAT = 0.05  # the DEQ's step memory varies by at most 5% over the training caps
MEMORY_RATIO = 4.0  # the explicit network that matches the DEQ needs 4x its memory
MB = 2**20


@dataclass(frozen=True)
class Settings:
    """What the part trains and measures.

    Attributes:
        families: the puzzle families.
        seeds: `run.seed` of each run (means and spreads are over these).
        family_seeds: per family, seeds replacing `seeds`.
        overrides: per family, settings added to every run of it (DEQ and baselines); empty:
            the task's defaults, as `equilibria train --task puzzles puzzles.family=F` has them.
        breadth: starts of the DEQ runs' breadth rows (`puzzles.breadth`, set only where the
            task's default differs).
        factor: the overthinking check scores at this multiple of the best cap (tied: depth).
        extra_sizes: per family, sizes scored in-process after training (not in the run).
        extra_puzzles: puzzles per extra size.
        long_puzzles: test puzzles of each size scored at the best cap and at `factor` x it.
        memory_family: the family whose training-step memory is measured (one seed, in-process).
        memory_caps: training caps of the DEQ and depths of the tied network measured.
        memory_batch: puzzles of the measured step (None: the task's training batch).
        timed_default: run the prefix-sums seed-0 DEQ alone with torch's default threads and
            check the whole command's time (every other run: two at a time, one thread each).
    """

    families: tuple[str, ...] = FAMILIES
    seeds: tuple[int, ...] = (0, 1, 2)
    # the maze and Sudoku runs are the slowest (a maze seed, its baselines and their tests
    # about an hour on this machine): one seed each (Sudoku of 10 epochs, its curve)
    family_seeds: Mapping[str, tuple[int, ...]] = field(
        default_factory=lambda: {"mazes": (0,), "sudoku": (0,)}
    )
    # the maze tests are the costliest solves (900 iterations at 15x15 cells): 50 puzzles a size
    overrides: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: {
            "mazes": ("puzzles.test_puzzles=50",),
            "sudoku": ("optim.epochs=10",),
        }
    )
    breadth: int = 8
    factor: int = 10
    extra_sizes: Mapping[str, tuple[int, ...]] = field(
        default_factory=lambda: {"prefix_sums": (1024,)}
    )
    extra_puzzles: int = 100
    long_puzzles: int = 20
    memory_family: str = "mazes"
    memory_caps: tuple[int, ...] = (16, 64, 256)
    memory_batch: int | None = None
    timed_default: bool = True

    @classmethod
    def for_config(cls, config: BenchConfig) -> Settings:
        """The full settings, or under --quick one seed and two epochs per run."""
        if config.quick:
            quick = {f: ("optim.epochs=2",) for f in FAMILIES}
            return cls(seeds=(0,), overrides=quick, timed_default=False)
        return cls()

    @classmethod
    def tiny(cls) -> Settings:
        """Seconds: tiny sizes and widths, a few puzzles, one seed, two steps (for tests)."""
        common = (
            "puzzles.train_puzzles=32",
            "puzzles.test_puzzles=6",
            "puzzles.steps_per_epoch=2",
            "puzzles.cache_dir=none",
            "puzzles.test_iterations=1",
            "data.batch_size=8",
            "optim.epochs=2",
        )
        sizes = {
            "prefix_sums": ("puzzles.train_size=6", "puzzles.test_sizes=6,12", "puzzles.width=8"),
            "mazes": ("puzzles.train_size=3", "puzzles.test_sizes=3,5,7", "puzzles.width=8"),
            "sudoku": ("puzzles.train_size=60", "puzzles.test_sizes=60,50", "puzzles.width=16"),
        }
        return cls(
            seeds=(0,),
            overrides={f: (*common, *sizes[f]) for f in FAMILIES},
            breadth=2,
            extra_sizes={"prefix_sums": (16,)},
            extra_puzzles=4,
            long_puzzles=4,
            memory_caps=(2, 4, 8),
            memory_batch=4,
        )

    def seeds_of(self, family: str) -> tuple[int, ...]:
        return tuple(self.family_seeds.get(family, self.seeds))

    def family_overrides(self, family: str) -> tuple[str, ...]:
        return tuple(self.overrides.get(family, ()))


Key = tuple[str, int, str]  # (family, seed, network)


def run_overrides(s: Settings, key: Key, timed: bool = False) -> list[str]:
    """The command line of a run: the task, the family, the part's overrides for it, the
    network (baselines), the breadth where the default differs, the seed."""
    family, seed, network = key
    command = ["--task", "puzzles", f"puzzles.family={family}", *s.family_overrides(family)]
    if network != "deq":
        command.append(f"puzzles.network={network}")
    elif PuzzlesConfig().breadth != s.breadth:
        command.append(f"puzzles.breadth={s.breadth}")
    if timed:  # as a user types it: the seed is the default one and progress shows
        return command
    return [*command, f"run.seed={seed}", "run.progress=false"]


def timed_key(s: Settings) -> Key | None:
    """The run timed alone with torch's default threads (None: none)."""
    if s.timed_default and "prefix_sums" in s.families and 0 in s.seeds_of("prefix_sums"):
        return ("prefix_sums", 0, "deq")
    return None


def collect(config: BenchConfig, s: Settings) -> dict[Key, dict[str, Any]]:
    """Every run's summary, wall seconds, epoch records and in-process `analysis`."""
    folder = config.out / NAME
    timed = timed_key(s)

    def job(key: Key, threads: int | None) -> dict[str, Any]:
        family, seed, network = key
        out = folder / f"{family}-{network}-seed{seed}"
        result = train(out, run_overrides(s, key, timed=key == timed), threads)
        extra = s.extra_sizes.get(family, ()) if network == "deq" else ()
        result["analysis"] = analyzed(
            out,
            result["read"],
            factor=s.factor,
            extra_sizes=extra,
            extra_puzzles=s.extra_puzzles,
            long_puzzles=s.long_puzzles,
            device=config.device,
        )
        return result

    keys = [(f, seed, n) for f in s.families for seed in s.seeds_of(f) for n in NETWORKS]
    results = {timed: job(timed, None)} if timed else {}
    results.update(in_pairs({key: partial(job, key, 1) for key in keys if key != timed}))
    return {key: results[key] for key in keys}


# --- formatting -------------------------------------------------------------------------------


def percent(values: list[float | None]) -> str | None:
    """Fractions as 'mean (sd)' in percent (None: nothing measured)."""
    found = [v for v in values if v is not None]
    if not found:
        return None
    mean, spread = mean_and_spread([100 * v for v in found])
    return f"{mean:.1f} ({spread:.1f})" if len(found) > 1 else f"{mean:.1f}"


def seeds_text(values: list[Any], fmt: Callable[[Any], str] = lambda v: f"{100 * v:.1f}") -> str:
    return " / ".join("n/a" if v is None else fmt(v) for v in values)


def mean(values: list[float | None]) -> float | None:
    found = [v for v in values if v is not None]
    return statistics.fmean(found) if found else None


def nearest(sizes: list[int], target: float) -> int:
    return min(sizes, key=lambda size: (abs(size - target), size))


def describe(family: str, size: int) -> str:
    return PUZZLE_FAMILIES[family].description(size)


class Runs:
    """The results of one family, by network and seed, with the lookups the tables need."""

    def __init__(self, family: str, results: dict[Key, dict[str, Any]], seeds: tuple[int, ...]):
        self.family = family
        self.seeds = seeds
        self.by = {n: [results[(family, seed, n)] for seed in seeds] for n in NETWORKS}
        first = self.by["deq"][0]
        self.sizes: list[int] = list(first["test_sizes"])
        self.train_size: int = first["train_size"]
        self.hardest = family_spec(family).hardest(self.sizes)

    def tests(self, network: str, size: int, key: str = "accuracy") -> list[Any]:
        return [r["tests"][str(size)].get(key) for r in self.by[network]]

    def tied_at_depth(self, size: int) -> list[float]:
        return [r["analysis"]["sizes"][str(size)]["at_depth"]["accuracy"] for r in self.by["tied"]]

    def breadth(self) -> list[dict[str, Any] | None]:
        """Each seed's breadth rows on the hardest split (recomputed ones first)."""
        return [r["analysis"].get("breadth") or r.get("breadth") for r in self.by["deq"]]

    def mean_sweep(self, network: str, size: int) -> tuple[list[int], list[float]]:
        """Caps and mean accuracy over seeds of a network's depth sweep at `size`."""
        sweeps = [r["sweeps"][str(size)] for r in self.by[network]]
        caps = [row["max_iter"] for row in sweeps[0]]
        accuracy = [statistics.fmean(s[i]["accuracy"] for s in sweeps) for i in range(len(caps))]
        return caps, accuracy


# --- tables ---------------------------------------------------------------------------------


def accuracy_table(runs: Runs, s: Settings) -> Table:
    depth = next(iter(runs.by["tied"][0]["analysis"]["sizes"].values()))["depth"]
    table = Table(
        f"{runs.family}: puzzles solved by test size (% mean (sd) over seeds)",
        [
            Column("size", "test size"),
            Column("deq", "DEQ at the test cap"),
            Column("deq_seeds", "DEQ per seed"),
            Column("cap", "test cap"),
            Column("nfe", "DEQ mean NFE", ".0f"),
            Column("converged", "DEQ converged", ".1%"),
            Column("tied", f"tied at its training depth ({depth})"),
            Column("tied_cap", "tied at the test cap"),
            Column("feedforward", f"feed-forward ({depth} blocks)"),
        ],
    )
    for size in runs.sizes:
        deq = runs.tests("deq", size)
        table.add(
            size=describe(runs.family, size),
            deq=percent(deq),
            deq_seeds=seeds_text(deq),
            cap=runs.tests("deq", size, "max_iter")[0],
            nfe=mean(runs.tests("deq", size, "forward_nfe")),
            converged=mean(runs.tests("deq", size, "converged")),
            tied=percent(runs.tied_at_depth(size)),
            tied_cap=percent(runs.tests("tied", size)),
            feedforward=percent(runs.tests("feedforward", size)),
        )
    for size in s.extra_sizes.get(runs.family, ()):
        rows = [r["analysis"]["extra"][str(size)] for r in runs.by["deq"]]
        table.add(
            size=f"{describe(runs.family, size)} ({rows[0]['puzzles']} puzzles, scored after "
            "training)",
            deq=percent([row["accuracy"] for row in rows]),
            deq_seeds=seeds_text([row["accuracy"] for row in rows]),
            cap=rows[0]["max_iter"],
            nfe=mean([row["forward_nfe"] for row in rows]),
            converged=mean([row["converged"] for row in rows]),
        )
    return table


def sweep_table(runs: Runs) -> Table:
    table = Table(
        f"{runs.family}: DEQ accuracy against the test-time cap (% mean (sd) over seeds)",
        [
            Column("size", "test size"),
            Column("cap", "cap"),
            Column("deq", "DEQ"),
            Column("nfe", "DEQ mean NFE", ".0f"),
            Column("converged", "DEQ converged", ".1%"),
            Column("tied", "tied, that many applications"),
        ],
    )
    for size in runs.sizes:
        sweeps = [r["sweeps"][str(size)] for r in runs.by["deq"]]
        tied_sweeps = [
            {row["max_iter"]: row for row in r["sweeps"][str(size)]} for r in runs.by["tied"]
        ]
        for i, row in enumerate(sweeps[0]):
            cap = row["max_iter"]
            table.add(
                size=describe(runs.family, size),
                cap=cap,
                deq=percent([sweep[i]["accuracy"] for sweep in sweeps]),
                nfe=mean([sweep[i]["forward_nfe"] for sweep in sweeps]),
                converged=mean([sweep[i]["converged"] for sweep in sweeps]),
                tied=percent([t[cap]["accuracy"] if cap in t else None for t in tied_sweeps]),
            )
    return table


def breadth_table(all_runs: list[Runs], s: Settings) -> Table:
    table = Table(
        f"Breadth on the hardest split: 1 start against {s.breadth} (% mean (sd) over seeds)",
        [
            Column("family", "family"),
            Column("size", "split"),
            Column("puzzles", "puzzles"),
            Column("one", "1 start"),
            Column("residual", f"{s.breadth} starts, kept by residual"),
            Column("vote", f"{s.breadth} starts, by vote"),
            Column("gain", "gain by residual (points)", "+.1f"),
            Column("independence", "path independence", ".1%"),
        ],
    )
    for runs in all_runs:
        rows = [row for row in runs.breadth() if row is not None]
        if not rows:
            continue
        table.add(
            family=runs.family,
            size=describe(runs.family, rows[0]["size"]),
            puzzles=rows[0]["one"]["puzzles"],
            one=percent([row["one"]["accuracy"] for row in rows]),
            residual=percent([row["residual"]["accuracy"] for row in rows]),
            vote=percent([row["vote"]["accuracy"] for row in rows]),
            gain=100 * statistics.fmean(breadth_gain(row) for row in rows),
            independence=mean([row["residual"].get("path_independence") for row in rows]),
        )
    return table


def breadth_gain(row: dict[str, Any]) -> float:
    return row["residual"]["accuracy"] - row["one"]["accuracy"]


def overthinking_rows(runs: Runs) -> list[dict[str, Any]]:
    """Per network (DEQ, tied) and size: the best (depth) accuracy and that at 10x, per seed."""
    rows = []
    for size in runs.sizes:
        deq = [r["analysis"]["sizes"][str(size)] for r in runs.by["deq"]]
        rows.append(
            {
                "network": "deq",
                "size": size,
                "caps": [d["best_cap"] for d in deq],
                "long_caps": [d["long"]["max_iter"] for d in deq],
                "best": [d["best_accuracy"] for d in deq],
                "long": [d["long"]["accuracy"] for d in deq],
                "nfe": [d["long"]["forward_nfe"] for d in deq],
            }
        )
        tied = [r["analysis"]["sizes"][str(size)] for r in runs.by["tied"]]
        rows.append(
            {
                "network": "tied",
                "size": size,
                "caps": [t["depth"] for t in tied],
                "long_caps": [t["long"]["max_iter"] for t in tied],
                "best": [t["at_depth"]["accuracy"] for t in tied],
                "long": [t["long"]["accuracy"] for t in tied],
                "nfe": [None for _ in tied],
            }
        )
    return rows


def overthinking_table(all_runs: list[Runs], s: Settings) -> Table:
    table = Table(
        f"Iterating {s.factor}x longer: the DEQ at {s.factor}x its sweep's best cap, the tied "
        f"network at {s.factor}x its training depth, both on the first {s.long_puzzles} test "
        "puzzles of each size (% mean (sd) over seeds)",
        [
            Column("family", "family"),
            Column("network", "network"),
            Column("size", "test size"),
            Column("caps", "best cap (tied: depth), per seed"),
            Column("best", "accuracy there"),
            Column("long_caps", f"{s.factor}x cap"),
            Column("long", f"accuracy at {s.factor}x"),
            Column("change", "change (points)", "+.1f"),
            Column("nfe", "DEQ mean NFE there", ".0f"),
        ],
    )
    for runs in all_runs:
        for row in overthinking_rows(runs):
            table.add(
                family=runs.family,
                network=LABELS[row["network"]],
                size=describe(runs.family, row["size"]),
                caps=seeds_text(row["caps"], str),
                best=percent(row["best"]),
                long_caps=seeds_text(row["long_caps"], str),
                long=percent(row["long"]),
                change=100 * (statistics.fmean(row["long"]) - statistics.fmean(row["best"])),
                nfe=mean(row["nfe"]),
            )
    return table


def time_table(all_runs: list[Runs]) -> Table:
    table = Table(
        "Training time and equilibrium (mean (sd) over seeds)",
        [
            Column("family", "family"),
            Column("network", "network"),
            Column("parameters", "parameters"),
            Column("epochs", "epochs x steps"),
            Column("train_s", "train s"),
            Column("command_s", "whole command s"),
            Column("residual", "DEQ train residual, first -> last epoch"),
            Column("converged", "DEQ test solves converged", ".1%"),
        ],
    )
    for runs in all_runs:
        for network in NETWORKS:
            results = runs.by[network]
            seconds = mean_and_spread([r["train_seconds"] for r in results])
            walls = [r["wall_seconds"] for r in results if r["wall_seconds"] is not None]
            eq = [r["equilibrium"] for r in results] if network == "deq" else []
            first = results[0]
            table.add(
                family=runs.family,
                network=LABELS[network],
                parameters=first["parameters"],
                epochs=f"{first['epochs']} x {first['steps'] // max(first['epochs'], 1)}",
                train_s=f"{seconds[0]:.0f} ({seconds[1]:.0f})",
                command_s=f"{statistics.fmean(walls):.0f}" if walls else None,
                residual=(
                    f"{mean([e['train_residual_first'] for e in eq]):.1e} -> "
                    f"{mean([e['train_residual_final'] for e in eq]):.1e}"
                    if eq
                    else None
                ),
                converged=mean([e["test_converged"] for e in eq]) if eq else None,
            )
    return table


def curve_table(runs: Runs) -> Table:
    """Puzzles solved at the training difficulty after each epoch (metrics.jsonl)."""
    table = Table(
        f"{runs.family}: puzzles solved at the training difficulty per epoch (% mean over seeds)",
        [
            Column("epoch", "epoch"),
            Column("deq_train", "DEQ, training batches"),
            Column("deq", "DEQ, test"),
            Column("tied", "tied, test"),
            Column("feedforward", "feed-forward, test"),
        ],
    )
    epochs = min(len(r["history"]) for network in NETWORKS for r in runs.by[network])

    def at(network: str, epoch: int, key: str = "test_accuracy") -> float:
        return 100 * statistics.fmean(r["history"][epoch][key] for r in runs.by[network])

    for epoch in range(epochs):
        table.add(
            epoch=epoch + 1,
            deq_train=f"{at('deq', epoch, 'train_accuracy'):.1f}",
            deq=f"{at('deq', epoch):.1f}",
            tied=f"{at('tied', epoch):.1f}",
            feedforward=f"{at('feedforward', epoch):.1f}",
        )
    return table


def memory_table(memory: dict[str, Any]) -> Table:
    table = Table(
        f"{memory['family']}: memory of one training step ({memory['batch']} puzzles of "
        f"{describe(memory['family'], memory['size'])})",
        [
            Column("model", "network"),
            Column("cap", "training cap / depth"),
            Column("applications", "cell applications"),
            Column("saved_mb", "activations saved MB", ".2f"),
            Column("peak_mb", "peak tensor MB", ".2f"),
        ],
    )
    for cap, row in memory["deq"].items():
        default = " (the default cap)" if cap == memory["default_cap"] else ""
        table.add(
            model=f"DEQ, its default gradient, solve at tolerance 0{default}",
            cap=cap,
            applications=row["applications"],
            saved_mb=row["saved_bytes"] / MB,
            peak_mb=None if row["peak_bytes"] is None else row["peak_bytes"] / MB,
        )
    for depth, row in memory["tied"].items():
        table.add(
            model="tied, backpropagated through every application",
            cap=depth,
            applications=row["applications"],
            saved_mb=row["saved_bytes"] / MB,
            peak_mb=None if row["peak_bytes"] is None else row["peak_bytes"] / MB,
        )
    row = memory["feedforward"]
    table.add(
        model="feed-forward (matched parameters)",
        cap=row["applications"],
        applications=row["applications"],
        saved_mb=row["saved_bytes"] / MB,
        peak_mb=None if row["peak_bytes"] is None else row["peak_bytes"] / MB,
    )
    return table


def matching(runs: Runs, memory: dict[str, Any]) -> dict[str, Any]:
    """The explicit network deep enough to match the DEQ on the hardest split, if one is."""
    size = runs.hardest
    deq_accuracy = statistics.fmean(runs.tests("deq", size))
    nfe = mean(runs.tests("deq", size, "forward_nfe")) or 0.0
    deq_bytes = memory["deq"][memory["default_cap"]]["saved_bytes"]
    intercept, slope = linear_fit({d: r["saved_bytes"] for d, r in memory["tied"].items()})
    depth = memory["default_cap"]
    explicit = {
        "tied": (statistics.fmean(runs.tied_at_depth(size)), memory["tied"][depth]),
        "feedforward": (statistics.fmean(runs.tests("feedforward", size)), memory["feedforward"]),
    }
    matches = {n: v for n, v in explicit.items() if v[0] >= deq_accuracy}
    cheapest = min(matches, key=lambda n: matches[n][1]["saved_bytes"]) if matches else None
    return {
        "size": size,
        "deq_accuracy": deq_accuracy,
        "deq_nfe": nfe,
        "deq_bytes": deq_bytes,
        "explicit": explicit,
        "match": cheapest,
        "tied_at_nfe": intercept + slope * nfe,
    }


def matching_table(match: dict[str, Any], family: str) -> Table:
    table = Table(
        f"{family}: the explicit network deep enough to match the DEQ on "
        f"{describe(family, match['size'])}",
        [
            Column("model", "network"),
            Column("accuracy", "solved %", ".1f"),
            Column("applications", "cell applications"),
            Column("saved_mb", "training-step activations MB", ".2f"),
            Column("ratio", "x the DEQ's", ".1f"),
            Column("verdict", "matches the DEQ"),
        ],
    )
    deq_mb = match["deq_bytes"] / MB
    table.add(
        model="DEQ (test cap; memory at its default training cap)",
        accuracy=100 * match["deq_accuracy"],
        applications=f"{match['deq_nfe']:.0f} (mean test NFE)",
        saved_mb=deq_mb,
        ratio=1.0,
        verdict="",
    )
    for network, (accuracy, row) in match["explicit"].items():
        table.add(
            model=f"{LABELS[network]} at its training depth",
            accuracy=100 * accuracy,
            applications=row["applications"],
            saved_mb=row["saved_bytes"] / MB,
            ratio=row["saved_bytes"] / match["deq_bytes"],
            verdict="yes" if accuracy >= match["deq_accuracy"] else "no",
        )
    table.add(
        model="tied at the DEQ's mean test NFE (extrapolated linearly from the measured depths)",
        applications=f"{match['deq_nfe']:.0f}",
        saved_mb=match["tied_at_nfe"] / MB,
        ratio=match["tied_at_nfe"] / match["deq_bytes"],
        verdict="never matches at the depths trained" if match["match"] is None else "",
    )
    return table


# --- targets --------------------------------------------------------------------------------


def accuracy_check(runs: Runs, size: int | None, target: float, what: str) -> Check:
    """DEQ mean accuracy at `size` at least `target` (not checked when `size` was not tested)."""
    label = f"{runs.family}: DEQ >= {100 * target:g}% at {what}"
    if size is None or size not in runs.sizes:
        return Check(label, "size not among the test sizes", None)
    values = runs.tests("deq", size)
    value = statistics.fmean(values)
    return Check(
        label,
        f"{100 * value:.1f}% at {describe(runs.family, size)} "
        f"(lowest seed {100 * min(values):.1f}%)",
        value >= target,
    )


def prefix_checks(runs: Runs) -> list[Check]:
    checks = [accuracy_check(runs, size, PREFIX_ACCURACY, f"{size} bits") for size in PREFIX_SIZES]
    size, limit = PREFIX_BASELINE
    label = f"prefix_sums: feed-forward baseline <= {100 * limit:g}% at {size} bits"
    if size in runs.sizes:
        value = statistics.fmean(runs.tests("feedforward", size))
        checks.append(Check(label, f"{100 * value:.1f}%", value <= limit))
    else:
        checks.append(Check(label, "size not among the test sizes", None))
    seconds = [r["train_seconds"] for r in runs.by["deq"]]
    checks.append(
        Check(
            f"prefix_sums: DEQ training within {TRAIN_SECONDS / 60:g} minutes (every seed)",
            f"slowest {max(seconds):.0f} s (seeds: {seeds_text(seconds, lambda v: f'{v:.0f}')})",
            max(seconds) <= TRAIN_SECONDS,
        )
    )
    return checks


def maze_checks(runs: Runs) -> list[Check]:
    n = runs.train_size
    checks = []
    for multiple, target in MAZE_ACCURACY:
        size = nearest(runs.sizes, multiple * n)
        what = "n" if multiple == 1 else f"about {multiple}n"
        checks.append(accuracy_check(runs, size, target, f"{what} ({size}, n = {n})"))
    multiple, limit = MAZE_BASELINES
    size = nearest(runs.sizes, multiple * n)
    tied = statistics.fmean(runs.tied_at_depth(size))
    feedforward = statistics.fmean(runs.tests("feedforward", size))
    checks.append(
        Check(
            f"mazes: both baselines <= {100 * limit:g}% at about {multiple}n ({size})",
            f"tied {100 * tied:.1f}%, feed-forward {100 * feedforward:.1f}%",
            max(tied, feedforward) <= limit,
        )
    )
    return checks


def sudoku_checks(runs: Runs) -> list[Check]:
    trained = runs.train_size
    checks = [accuracy_check(runs, trained, SUDOKU_TRAINED, f"the training difficulty ({trained})")]
    fewer, target = SUDOKU_FEWER
    size = trained - fewer
    label = f"sudoku: DEQ >= {100 * target:g}% with {fewer} fewer givens, with depth and breadth"
    far = f"sudoku: feed-forward far below the DEQ with {fewer} fewer givens"
    if size not in runs.sizes:
        return [*checks, Check(label, "size not among the test sizes", None), Check(far, "", None)]
    depth = runs.tests("deq", size)
    breadth = [row for row in runs.breadth() if row is not None and row["size"] == size]
    by_residual = [row["residual"]["accuracy"] for row in breadth]
    by_vote = [row["vote"]["accuracy"] for row in breadth]
    best = max(statistics.fmean(v) for v in (depth, by_residual, by_vote) if v)
    measured = f"depth {100 * statistics.fmean(depth):.1f}%"
    if breadth:
        measured += (
            f", {breadth[0]['residual']['starts']} starts by residual "
            f"{100 * statistics.fmean(by_residual):.1f}%, by vote "
            f"{100 * statistics.fmean(by_vote):.1f}% (first {breadth[0]['one']['puzzles']} puzzles)"
        )
    checks.append(Check(label, measured, best >= target))
    feedforward = statistics.fmean(runs.tests("feedforward", size))
    ratio, points = FAR_BELOW
    checks.append(
        Check(
            f"{far} (at most {ratio:g}x its accuracy and {100 * points:g} points below)",
            f"feed-forward {100 * feedforward:.1f}% vs DEQ {100 * best:.1f}%",
            feedforward <= ratio * best and best - feedforward >= points,
        )
    )
    return checks


def overthinking_check(runs: Runs, factor: int) -> Check:
    rows = [row for row in overthinking_rows(runs) if row["network"] == "deq"]
    drops = {
        row["size"]: statistics.fmean(row["best"]) - statistics.fmean(row["long"]) for row in rows
    }
    worst = max(drops, key=drops.get)
    return Check(
        f"{runs.family}: no overthinking, DEQ at {factor}x the best cap within "
        f"{100 * OVERTHINKING:g} point of the best on every split",
        f"largest drop {100 * drops[worst]:+.1f} points ({describe(runs.family, worst)})",
        all(drop <= OVERTHINKING + 1e-9 for drop in drops.values()),
    )


def breadth_check(runs: Runs, starts: int) -> tuple[Check, str | None]:
    label = (
        f"{runs.family}: {starts} starts kept by residual gain >= {100 * BREADTH_GAIN:g} points "
        "over 1 start on the hardest split"
    )
    rows = [row for row in runs.breadth() if row is not None]
    if not rows:
        return Check(label, "no breadth rows", None), None
    gain = statistics.fmean(breadth_gain(row) for row in rows)
    one = statistics.fmean(row["one"]["accuracy"] for row in rows)
    passed = gain >= BREADTH_GAIN
    split = describe(runs.family, rows[0]["size"])
    note = None
    if not passed:
        note = (
            f"Breadth does not help enough on {runs.family}: on {split}, {starts} starts kept by "
            f"residual gain {100 * gain:+.1f} points over 1 start ({100 * one:.1f}%)."
        )
    return Check(label, f"{100 * gain:+.1f} points on {split}", passed), note


def memory_checks(memory: dict[str, Any], match: dict[str, Any] | None) -> list[Check]:
    saved = [row["saved_bytes"] for row in memory["deq"].values()]
    spread = max(saved) / min(saved) - 1
    checks = [
        Check(
            f"{memory['family']}: DEQ training-step memory flat in the training cap (within "
            f"{100 * FLAT:g}% over caps {', '.join(map(str, memory['deq']))})",
            f"{min(saved) / MB:.2f} to {max(saved) / MB:.2f} MB ({100 * spread:.1f}%)",
            spread <= FLAT,
        )
    ]
    if match is None:
        return checks
    label = (
        f"{memory['family']}: the explicit network that matches the DEQ on the hardest split "
        f"needs >= {MEMORY_RATIO:g}x its training-step activation memory, or none matches"
    )
    if match["match"] is None:
        ratio = match["tied_at_nfe"] / match["deq_bytes"]
        measured = (
            f"never matches at the depths trained; the tied network at the DEQ's "
            f"{match['deq_nfe']:.0f} NFE would need {ratio:.0f}x"
        )
        checks.append(Check(label, measured, True))
    else:
        accuracy, row = match["explicit"][match["match"]]
        ratio = row["saved_bytes"] / match["deq_bytes"]
        measured = f"{LABELS[match['match']]} matches ({100 * accuracy:.1f}%) at {ratio:.1f}x"
        checks.append(Check(label, measured, ratio >= MEMORY_RATIO))
    return checks


# --- figures --------------------------------------------------------------------------------


def sweep_figure(runs: Runs, path: Path) -> Path:
    """Accuracy against the test-time cap, one colour per size: DEQ solid, tied dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for index, size in enumerate(runs.sizes):
        colour = f"C{index}"
        caps, accuracy = runs.mean_sweep("deq", size)
        label = describe(runs.family, size)
        ax.plot(
            caps,
            [100 * a for a in accuracy],
            "-o",
            color=colour,
            markersize=3,
            label=f"DEQ, {label}",
        )
        caps, accuracy = runs.mean_sweep("tied", size)
        ax.plot(
            caps,
            [100 * a for a in accuracy],
            "--s",
            color=colour,
            markersize=3,
            label=f"tied, {label}",
        )
    ax.axvline(
        runs.by["deq"][0]["train_cap"],
        color="0.5",
        linestyle=":",
        linewidth=1,
        label="training cap / depth",
    )
    ax.set(
        xscale="log",
        ylim=(-3, 103),
        xlabel="test-time cap (DEQ iterations; tied: applications)",
        ylabel="puzzles solved % (mean over seeds)",
        title=f"{runs.family}: trained on {describe(runs.family, runs.train_size)}",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, handlelength=3.5)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --- the part -------------------------------------------------------------------------------


def puzzles_benchmark(config: BenchConfig, settings: Settings | None = None) -> Section:
    """Train every family's DEQ and baselines, score them again, measure memory, judge."""
    s = settings or Settings.for_config(config)
    results = collect(config, s)
    timed = timed_key(s)
    all_runs = [Runs(family, results, s.seeds_of(family)) for family in s.families]
    section = Section(NAME, TITLE, summary=" ".join(__doc__.split("\n\n")[1].split()))
    section.settings = {
        "seeds": ", ".join(map(str, s.seeds))
        + "".join(f" ({f}: {', '.join(map(str, s.seeds_of(f)))})" for f in s.family_seeds),
        "DEQ runs": "`equilibria train --task puzzles puzzles.family=F run.seed=S` (the task's "
        "defaults"
        + (f"; puzzles.breadth={s.breadth} added" if PuzzlesConfig().breadth != s.breadth else "")
        + ")",
        "baselines": "the same with puzzles.network=feedforward or puzzles.network=tied",
        **{f"{f} overrides": " ".join(s.family_overrides(f)) for f in s.families if s.overrides},
        "threads": "two runs at a time, one thread each"
        + (", but the prefix-sums seed-0 DEQ: alone, torch's default threads" if timed else ""),
        "scored after training": f"in this process: {s.factor}x caps, tied depths, extra sizes "
        + ", ".join(f"{f} {sizes}" for f, sizes in s.extra_sizes.items())
        + f" ({s.extra_puzzles} puzzles)",
    }
    read = [f"{k[0]} {k[2]} seed {k[1]}" for k, r in results.items() if r.get("read")]
    if read:
        section.settings["runs read from an earlier invocation"] = "; ".join(read)
    for runs in all_runs:
        section.tables += [accuracy_table(runs, s), sweep_table(runs)]
    section.tables += [
        breadth_table(all_runs, s),
        overthinking_table(all_runs, s),
        time_table(all_runs),
    ]
    by_family = {runs.family: runs for runs in all_runs}
    if "sudoku" in by_family:
        section.tables.append(curve_table(by_family["sudoku"]))
    checks: list[Check] = []
    if "prefix_sums" in by_family:
        checks += prefix_checks(by_family["prefix_sums"])
    if "mazes" in by_family:
        checks += maze_checks(by_family["mazes"])
    if "sudoku" in by_family:
        checks += sudoku_checks(by_family["sudoku"])
    for runs in all_runs:
        checks.append(overthinking_check(runs, s.factor))
        check, note = breadth_check(runs, s.breadth)
        checks.append(check)
        if note:
            section.notes.append(note)
        tied = [row for row in overthinking_rows(runs) if row["network"] == "tied"]
        drop = max(statistics.fmean(r["best"]) - statistics.fmean(r["long"]) for r in tied)
        section.notes.append(
            f"{runs.family}: the tied network at {s.factor}x its training depth "
            + ("overthinks" if drop > OVERTHINKING else "does not overthink")
            + f" (largest drop {100 * drop:+.1f} points over the test sizes)."
        )
        summary_breadth = runs.by["deq"][0].get("breadth")
        if summary_breadth is not None and summary_breadth["size"] != runs.hardest:
            section.notes.append(
                f"{runs.family}: the run's own breadth rows are on "
                f"{describe(runs.family, summary_breadth['size'])}; the hardest split is "
                f"{describe(runs.family, runs.hardest)}, so breadth there was scored after "
                "training with the task's own breadth procedure."
            )
    if s.memory_family in by_family:
        memory = memory_scan(
            s.memory_family, s.family_overrides(s.memory_family), s.memory_caps, s.memory_batch
        )
        match = matching(by_family[s.memory_family], memory)
        section.tables += [memory_table(memory), matching_table(match, s.memory_family)]
        checks += memory_checks(memory, match)
        section.settings["memory"] = (
            f"{s.memory_family}, fresh weights (seed 0), in this process: activations saved for "
            "backward "
            "(parameters excluded) and still held when the loss is computed, and the peak of "
            "all tensor memory, of one step; the DEQ's training solve at tolerance 0, so that it "
            "runs its whole cap"
        )
    if timed:
        wall = results[timed]["wall_seconds"]
        changed = " ".join(s.family_overrides("prefix_sums"))
        checks.append(
            Check(
                f"`equilibria train --task puzzles` with its defaults within "
                f"{TRAIN_SECONDS / 60:g} minutes (whole command, torch's default threads)",
                ("n/a (read from an earlier invocation)" if wall is None else f"{wall:.0f} s")
                + (f" (with {changed})" if changed else ""),
                None if wall is None else wall <= TRAIN_SECONDS,
            )
        )
    section.checks = checks
    if "sudoku" in by_family:
        missed = [
            f"{c.target} ({c.measured})"
            for c in checks
            if c.target.startswith("sudoku") and c.passed is not True
        ]
        if missed:
            section.notes.append(
                "Sudoku missed: " + "; ".join(missed) + ". Its per-epoch curve is in the table "
                "above."
            )
    for runs in all_runs:
        path = sweep_figure(runs, config.out / f"puzzles_{runs.family}_accuracy_vs_cap.png")
        section.figures.append(
            Figure(path.name, f"{runs.family}: accuracy against the test-time cap per size")
        )
    return section


@register(NAME, TITLE, order=240, requires=TRAINING_MODULES)
def run_puzzles(config: BenchConfig) -> Section:
    return puzzles_benchmark(config)
