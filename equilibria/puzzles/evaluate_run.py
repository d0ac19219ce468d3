"""`equilibria eval RUN` for a puzzle run: the run's test difficulties, harder generated ones
(`--sizes`) or the puzzles of a text file (`--data`), at any budget (`--max-iter`, `--sweep`),
from several starts (`--starts`, `--select`); with `--out`, a picture of the answers."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..config import Config
from ..extras import require
from ..tasks import EvalRequest, Evaluation
from ..tasks.evaluation import check_solve_options
from ..training.checkpoint import stored_config
from ..training.distributed import resolve_device
from .data import PuzzleSet, load_puzzles
from .data.pictures import draw_puzzles
from .evaluate import score, test_cap
from .families import family_spec
from .plots import plot_accuracy_vs_iterations
from .report import PICTURED
from .setup import TEST_SEED, explicit_model, family_of, run_sizes, trained_puzzle_model


def row_text(label: str, row: Mapping[str, Any]) -> str:
    """One printed line: puzzles solved (and verified by the rules) and, for a DEQ, the NFE,
    residual, converged fraction and, from several starts, their agreement."""
    text = (
        f"{label:<34} solved {100 * row['accuracy']:6.2f}% ({row['solved']}/{row['puzzles']}, "
        f"{row['valid']} pass the rules)"
    )
    if row.get("forward_nfe") is not None:
        text += (
            f"  NFE {row['forward_nfe']:6.1f}  residual {row['median_residual']:.1e}"
            f"  converged {100 * row['converged']:5.1f}%"
        )
    if row.get("path_independence") is not None:
        text += f"  starts agree {100 * row['path_independence']:5.1f}%"
    return text


def puzzle_sets(request: EvalRequest, config: Config) -> list[PuzzleSet]:
    """The puzzles to test: a file's, generated ones at `request.sizes`, or the run's tests
    (the training puzzles' first ones with split "train")."""
    family = family_of(config, request.checkpoint)
    p = config.puzzles
    if request.data_file is not None:
        return family.read(request.data_file)
    if request.split == "train":
        size = run_sizes(config).train
        return [load_puzzles(p.family, p.test_puzzles, size, config.run.seed, p.cache_dir)]
    sizes = request.sizes or run_sizes(config).test
    return [load_puzzles(p.family, p.test_puzzles, s, TEST_SEED + s, p.cache_dir) for s in sizes]


def evaluate_run(request: EvalRequest) -> Evaluation:
    """Test the puzzle network saved at `request.path` as `request` asks."""
    config = stored_config(request.path, request.checkpoint).for_task()
    explicit = explicit_model(config)
    check_solve_options(request.path, explicit, request.solve, request.sweep)
    if explicit and request.starts > 1:
        raise ValueError(f"{request.path} holds {explicit}; --starts needs an equilibrium model")
    if request.plot or request.out:
        require("matplotlib", "the pictures of answers")
    device = resolve_device(request.device or config.run.device)
    model = trained_puzzle_model(config, request.checkpoint).to(device)
    family, spec = family_of(config, request.checkpoint), family_spec(config.puzzles.family)
    solve = {k: v for k, v in request.solve.items() if k != "max_iter"}
    batch_size = request.batch_size or config.data.eval_batch_size
    rows, answers = [], {}
    sets = puzzle_sets(request, config)
    for puzzles in sets:
        what = family.description(puzzles.difficulty)
        if explicit:
            caps: list[int | None] = [None]
        else:
            cap = request.solve.get("max_iter") or test_cap(config, puzzles.difficulty, spec)
            caps = list(request.sweep or [cap])
        for cap in caps:
            generator = torch.Generator().manual_seed(config.run.seed)
            scores = score(
                model,
                family,
                puzzles,
                device,
                cap=cap,
                batch_size=batch_size,
                starts=request.starts,
                select=request.select,
                scale=config.puzzles.start_scale or 1.0,
                solve=solve,
                generator=generator,
            )
            given = torch.cat(scores.answers)
            row = scores.row(cap, request.starts)
            row.update(
                label=f"{what}, cap {cap}" if cap else what,
                difficulty=puzzles.difficulty,
                valid=sum(family.check(x, a) for x, a in zip(puzzles.inputs, given, strict=True)),
            )
            rows.append(row)
            answers[what] = (puzzles, given)
    source = str(request.data_file) if request.data_file else family.name

    def plot(folder: Path) -> None:
        by_size: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_size.setdefault(family.description(row["difficulty"]), []).append(row)
        plot_accuracy_vs_iterations(
            by_size, folder / "accuracy_vs_iterations.png", title=f"{request.path}"
        )

    if request.out is not None:
        puzzles, given = answers[list(answers)[-1]]
        shown = min(PICTURED, len(puzzles))
        draw_puzzles(
            family.name,
            puzzles.inputs[:shown],
            given[:shown],
            puzzles.targets[:shown],
            Path(request.out) / "puzzles.png",
            title=f"{family.description(puzzles.difficulty)} ({source})",
        )
    starts = f", {request.starts} starts by {request.select}" if request.starts > 1 else ""
    return Evaluation(
        heading=f"{source} {request.split if request.data_file is None else ''}".strip() + starts,
        rows=rows,
        label=source,
        row_text=row_text,
        solve=dict(request.solve),
        record={"family": family.name, "starts": request.starts, "select": request.select},
        plot=plot if request.sweep else None,
    )
