"""What the puzzles part measures beyond a run's own summary: its trained model iterated far
longer than it needs (overthinking), the tied baseline at its training depth, harder sizes scored
in-process, breadth on the truly hardest split, and the memory of one training step."""

from __future__ import annotations

import dataclasses
import gc
import json
import weakref
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F

from equilibria.config import Config
from equilibria.puzzles.data import FAMILIES, PuzzleSet, load_puzzles
from equilibria.puzzles.evaluate import score, test_cap
from equilibria.puzzles.families import family_spec
from equilibria.puzzles.model import PuzzleModel, parameter_count
from equilibria.puzzles.report import breadth_rows
from equilibria.puzzles.setup import TEST_SEED, build_puzzle_model, resolve, training_cap
from equilibria.training.step import penalized

from .meters import peak_tensor_bytes
from .train_runs import epoch_records, run_cli

WALL = "wall_seconds.json"
ANALYSIS = "bench_analysis.json"
CPU = torch.device("cpu")


# --- training runs --------------------------------------------------------------------------


def train(out: Path, overrides: Sequence[str], threads: int | None = 1) -> dict[str, Any]:
    """`equilibria train --out OUT overrides...` in its own process: its summary, the wall seconds
    of the whole command and its epoch records. A finished run already in `out` (the part
    resumed into the same --out) is read, not repeated (`read` is then True)."""
    if (out / "summary.json").exists():
        summary = json.loads((out / "summary.json").read_text())
        wall = json.loads((out / WALL).read_text()) if (out / WALL).exists() else None
        return {**summary, "wall_seconds": wall, "history": epoch_records(out), "read": True}
    summary, seconds = run_cli(out, list(overrides), threads=threads)
    (out / WALL).write_text(json.dumps(seconds))
    return {**summary, "wall_seconds": seconds, "history": epoch_records(out), "read": False}


# --- a trained run, scored again --------------------------------------------------------------


def best_cap(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The sweep row of the highest accuracy (ties: the largest cap, the stricter check)."""
    return max(rows, key=lambda row: (row["accuracy"], row["max_iter"] or 0))


def test_set(config: Config, size: int, count: int | None = None) -> PuzzleSet:
    """The test puzzles of `size` as the run generated them (`count` of them: the run's)."""
    p = config.puzzles
    return load_puzzles(p.family, count or p.test_puzzles, size, TEST_SEED + size, p.cache_dir)


def analyze(
    path: Path,
    *,
    factor: int = 10,
    extra_sizes: Sequence[int] = (),
    extra_puzzles: int = 100,
    long_puzzles: int = 50,
    device: str = "cpu",
) -> dict[str, Any]:
    """Score the trained run at `path` again, in this process.

    DEQ: per test size, the first `long_puzzles` test puzzles at the sweep's best cap and at
    `factor` x it (the long solves cost most: a subset keeps them affordable); each of
    `extra_sizes` (`extra_puzzles` puzzles) at the test cap; breadth on the hardest split when
    the run's summary has it on another. Tied: per size, at its training depth and at `factor`
    x it. Feed-forward: nothing (its summary has its one depth). The model runs on `device`."""
    from equilibria.tasks import load_run

    run = load_run(path, device)
    model, config, family = run.model, run.config, run.data
    summary = run.summary or json.loads((Path(path) / "summary.json").read_text())
    batch = config.data.eval_batch_size
    result: dict[str, Any] = {"network": model.network, "sizes": {}}

    def scored(puzzles: PuzzleSet, cap: int | None) -> dict[str, Any]:
        scores = score(model, family, puzzles, run.device, cap=cap, batch_size=batch)
        return scores.row(cap, 1)

    if model.network == "deq":
        for size, rows in summary["sweeps"].items():
            best = best_cap(rows)
            subset = test_set(config, int(size), long_puzzles)
            result["sizes"][size] = {
                "best_cap": best["max_iter"],
                "best_accuracy": scored(subset, best["max_iter"])["accuracy"],
                "long": scored(subset, factor * best["max_iter"]),
            }
        spec = family_spec(config.puzzles.family)
        result["extra"] = {
            str(size): scored(test_set(config, size, extra_puzzles), test_cap(config, size, spec))
            for size in extra_sizes
        }
        hardest = spec.hardest(summary["test_sizes"])
        breadth = summary.get("breadth")
        if config.puzzles.breadth > 1 and (breadth is None or breadth["size"] != hardest):
            data = SimpleNamespace(
                tests={hardest: test_set(config, hardest)}, spec=spec, family=family
            )
            result["breadth"] = breadth_rows(model, data, config, run.device, hardest)
    elif model.network == "tied":
        for size in summary["tests"]:
            puzzles = test_set(config, int(size), long_puzzles)
            result["sizes"][size] = {
                "depth": model.depth,
                "at_depth": scored(puzzles, model.depth),
                "long": scored(puzzles, factor * model.depth),
            }
    return result


def analyzed(path: Path, reuse: bool, **options: Any) -> dict[str, Any]:
    """`analyze(path, **options)`, kept in `path`/ANALYSIS; with `reuse` one kept there with the
    same options is read instead (for a run itself read from an earlier invocation)."""
    kept = Path(path) / ANALYSIS
    # the options as JSON keeps them (tuples as lists); where it ran changes no number
    asked = json.loads(json.dumps({k: v for k, v in options.items() if k != "device"}))
    if reuse and kept.exists():
        stored = json.loads(kept.read_text())
        if stored.get("options") == asked:
            return stored["result"]
    result = analyze(path, **options)
    kept.write_text(json.dumps({"options": asked, "result": result}))
    return result


# --- memory of one training step ------------------------------------------------------------


class HeldForBackward:
    """Context manager: the bytes of the distinct storages autograd saved inside it that are
    still held when it ends (what a backward will read). Unlike counting every save as it
    happens, tensors saved by graphs dropped inside the block do not count, and a storage freed
    and its address reused is not mistaken for one already counted."""

    def __init__(self, exclude: Sequence[torch.Tensor] = ()) -> None:
        self._excluded = {_storage(t) for t in exclude}
        self._saved: list[weakref.ref[torch.Tensor]] = []
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self.bytes = 0

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        # a new tensor on the same storage, held by the graph alone: an output saved as itself
        # would hold its own graph alive through its grad_fn after the graph was dropped
        saved = tensor.detach()
        self._saved.append(weakref.ref(saved))
        return saved

    def __enter__(self) -> HeldForBackward:
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._hooks.__exit__(*exc)
        gc.collect()
        held = {}
        for ref in self._saved:
            tensor = ref()
            if tensor is not None and _storage(tensor) not in self._excluded:
                held[_storage(tensor)] = tensor.untyped_storage().nbytes()
        self.bytes = sum(held.values())


def _storage(tensor: torch.Tensor) -> tuple[str, int]:
    return str(tensor.device), tensor.untyped_storage().data_ptr()


def puzzle_config(family: str, overrides: Sequence[str] = ()) -> Config:
    """The config `equilibria train --task puzzles puzzles.family=FAMILY overrides...` trains
    (the task's values and the family's filled in, as `run_task` fills them)."""
    config = Config().override(["run.task=puzzles", f"puzzles.family={family}", *overrides])
    return resolve(config.for_task())


def training_batch(config: Config, count: int | None = None) -> PuzzleSet:
    """`count` (default: the training batch) puzzles at the run's training difficulty."""
    p = config.puzzles
    size = p.train_size or family_spec(p.family).train_size
    return FAMILIES[p.family].generate(count or config.data.batch_size, size, seed=0)


def step_memory(
    config: Config, puzzles: PuzzleSet, *, whole_cap: bool = True, seed: int = 0
) -> dict[str, Any]:
    """Bytes one training step of the network `config` builds keeps for backward (parameters
    excluded) and the peak of all tensor memory during its forward and backward, on `puzzles`.

    With `whole_cap` a DEQ's training solve runs its whole cap (tolerance 0, no early stop), so
    the cap is what is measured, not how soon the solve happens to converge."""
    torch.manual_seed(seed)
    model: PuzzleModel = build_puzzle_model(config).train()
    if whole_cap and model.network == "deq":
        settings = model.deq.train_settings
        model.deq.train_settings = dataclasses.replace(settings, tol=0.0, patience=None)
    spec, inputs = model.spec, puzzles.inputs
    targets = spec.loss_targets(puzzles.targets)

    early = getattr(config.puzzles, "early_loss", 0.0)  # the trainer's second loss, when on
    solves: list[Any] = []

    def loss() -> torch.Tensor:
        logits = model(inputs).float()
        solves.append(model.stats)
        total = penalized(F.cross_entropy(logits, targets), model.stats)
        if early and model.network == "deq":
            cap = model.deq.train_settings.max_iter
            extra = model.early_logits(inputs, max(cap // 2, 1)).float()
            total = total + early * F.cross_entropy(extra, targets)
        return total

    def step() -> None:
        model.zero_grad(set_to_none=True)
        loss().backward()

    step()  # warm-up: gradients and allocator pools exist before measuring
    with HeldForBackward(exclude=list(model.parameters())) as saved:
        value = loss()
    applications = solves[-1].forward_nfe if solves[-1] is not None else model.depth
    del value
    peak = peak_tensor_bytes(step, CPU)
    return {
        "network": model.network,
        "parameters": parameter_count(model),
        "applications": applications,
        "saved_bytes": saved.bytes,
        "peak_bytes": peak,
    }


def memory_scan(
    family: str, overrides: Sequence[str], caps: Sequence[int], batch: int | None = None
) -> dict[str, Any]:
    """One training step's memory of the DEQ at each training cap of `caps` (and its default
    one), of the tied network backpropagated through each of those depths, and of the
    feed-forward baseline at its depth, all on the same batch of training-size puzzles."""
    base = puzzle_config(family, overrides)
    default_cap = training_cap(base)
    caps = sorted({*caps, default_cap})
    puzzles = training_batch(base, batch)
    deq = {
        cap: step_memory(puzzle_config(family, [*overrides, f"deq.max_iter={cap}"]), puzzles)
        for cap in caps
    }
    tied = {
        depth: step_memory(
            puzzle_config(family, [*overrides, "puzzles.network=tied", f"puzzles.depth={depth}"]),
            puzzles,
        )
        for depth in caps
    }
    feedforward = step_memory(
        puzzle_config(family, [*overrides, "puzzles.network=feedforward"]), puzzles
    )
    return {
        "family": family,
        "batch": len(puzzles),
        "size": puzzles.difficulty,
        "default_cap": default_cap,
        "deq": deq,
        "tied": tied,
        "feedforward": feedforward,
    }


def linear_fit(points: dict[int, float]) -> tuple[float, float]:
    """Least-squares intercept and slope of `points` ({x: y}, at least two x)."""
    xs, ys = list(points), list(points.values())
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )
    return my - slope * mx, slope
