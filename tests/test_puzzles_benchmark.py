"""The puzzles benchmark part at tiny settings (tiny sizes, a few puzzles, one seed, two steps):
its tables, targets and figures, the overthinking and memory helpers."""

import json
import time

import pytest
import torch

from benchmarks import puzzle_runs, registry
from benchmarks.config import BenchConfig
from benchmarks.parts import puzzles
from equilibria.cli import main
from equilibria.config.puzzles import PuzzlesConfig
from equilibria.puzzles.families import family_spec
from equilibria.puzzles.setup import training_cap

TINY = puzzles.Settings.tiny()


def in_process(out, overrides, threads=None):
    """`run_cli`, but `equilibria train` runs in this process: a tiny run's own process would
    spend most of its time starting up."""
    started = time.perf_counter()
    assert main(["train", "--out", str(out), *overrides, f"run.threads={threads or 1}"]) == 0
    return json.loads((out / "summary.json").read_text()), time.perf_counter() - started


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(puzzle_runs, "run_cli", in_process)
        patch.setattr(puzzles, "in_pairs", lambda jobs: {key: job() for key, job in jobs.items()})
        section = puzzles.puzzles_benchmark(BenchConfig(quick=True, out=out), TINY)
    torch.set_num_threads(threads)
    return section, out


def test_the_part_is_registered_and_its_runs_keep_the_task_defaults():
    assert "puzzles" in registry.discover()
    s = puzzles.Settings()
    assert s.families == ("prefix_sums", "mazes", "sudoku") and s.seeds == (0, 1, 2)
    breadth = [] if PuzzlesConfig().breadth == 8 else ["puzzles.breadth=8"]
    timed = puzzles.run_overrides(s, ("prefix_sums", 0, "deq"), timed=True)
    assert timed == ["--task", "puzzles", "puzzles.family=prefix_sums", *breadth]
    tied = puzzles.run_overrides(s, ("mazes", 2, "tied"))
    assert tied == [
        "--task",
        "puzzles",
        "puzzles.family=mazes",
        "puzzles.test_puzzles=50",
        "puzzles.network=tied",
        "run.seed=2",
        "run.progress=false",
    ]


def test_tiny_run_has_every_table_target_and_figure(tiny):
    section, out = tiny
    titles = [table.title.split(" (")[0] for table in section.tables]
    for family in TINY.families:
        assert f"{family}: puzzles solved by test size" in titles
        assert f"{family}: DEQ accuracy against the test-time cap" in titles
        assert (out / f"puzzles_{family}_accuracy_vs_cap.png").is_file()
    sizes = section.table(next(t.title for t in section.tables if t.title.startswith("prefix")))
    assert sizes.column("size")[:2] == ["6-bit strings", "12-bit strings"]
    assert "16-bit strings (4 puzzles" in sizes.column("size")[2]
    breadth = section.tables[titles.index("Breadth on the hardest split: 1 start against 2")]
    assert breadth.column("size") == ["12-bit strings", "7x7-cell mazes", "Sudoku with 50 givens"]
    longer = next(t for t in section.tables if t.title.startswith("Iterating 10x longer"))
    assert len(longer.rows) == 2 * (2 + 3 + 2)
    times = next(t for t in section.tables if t.title.startswith("Training time"))
    assert len(times.rows) == 9 and times.rows[0]["epochs"] == "2 x 2"
    curve = next(t for t in section.tables if t.title.startswith("sudoku: puzzles solved at"))
    assert curve.column("epoch") == [1, 2]
    targets = [check.target for check in section.checks]
    for start in (
        "prefix_sums: DEQ >= 99% at 32 bits",
        "prefix_sums: feed-forward baseline <= 5% at 128 bits",
        "prefix_sums: DEQ training within 5 minutes",
        "mazes: DEQ >= 95% at n (3",
        "mazes: DEQ >= 90% at about 2n (5",
        "mazes: DEQ >= 75% at about 3n (7",
        "mazes: both baselines <= 20% at about 2n",
        "sudoku: DEQ >= 90% at the training difficulty (60)",
        "sudoku: DEQ >= 50% with 10 fewer givens",
        "sudoku: feed-forward far below",
        "mazes: no overthinking",
        "sudoku: 2 starts kept by residual gain >= 3 points",
        "mazes: DEQ training-step memory flat",
        "mazes: the explicit network that matches the DEQ",
        "`equilibria train --task puzzles` with its defaults within 5 minutes",
    ):
        assert any(target.startswith(start) for target in targets), start
    verdicts = {check.target.split(" (")[0]: check.passed for check in section.checks}
    assert verdicts["prefix_sums: DEQ >= 99% at 32 bits"] is None  # not a tiny test size
    assert verdicts["mazes: DEQ training-step memory flat in the training cap"] is True
    markdown = section.to_markdown()
    assert "| target | measured | verdict |" in markdown and "NOT met" in markdown


def test_overthinking_scores_the_same_puzzles_at_ten_times_the_cap(tiny):
    section, out = tiny
    run = out / "puzzles" / "mazes-deq-seed0"
    summary = json.loads((run / "summary.json").read_text())
    result = puzzle_runs.analyze(run, factor=10, long_puzzles=summary["test_puzzles"])
    for size, rows in summary["sweeps"].items():
        found = result["sizes"][size]
        # all the test puzzles: the best cap scores as it did in the run's sweep
        assert found["best_accuracy"] == max(row["accuracy"] for row in rows)
        assert found["long"]["max_iter"] == 10 * found["best_cap"]
        assert found["long"]["puzzles"] == summary["test_puzzles"]
        assert 0 <= found["long"]["accuracy"] <= 1
    tied = puzzle_runs.analyze(out / "puzzles" / "mazes-tied-seed0", factor=3)
    assert tied["network"] == "tied"
    for found in tied["sizes"].values():
        assert found["depth"] == summary["train_cap"]
        assert found["long"]["max_iter"] == 3 * found["depth"]


def test_deq_step_memory_is_flat_in_the_cap_and_the_tied_network_grows_linearly(tiny):
    section, _ = tiny
    memory = next(t for t in section.tables if t.title.startswith("mazes: memory"))
    deq = [row for row in memory.rows if row["model"].startswith("DEQ")]
    tied = [row for row in memory.rows if row["model"].startswith("tied")]
    default = training_cap(puzzle_runs.puzzle_config("mazes", TINY.family_overrides("mazes")))
    assert [row["cap"] for row in deq] == sorted({2, 4, 8, default})
    # tolerance 0: every iteration of the cap runs (unless the residual reaches exactly 0)
    assert [row["applications"] for row in deq][:3] == [2, 4, 8]
    assert max(r["saved_mb"] for r in deq) == pytest.approx(min(r["saved_mb"] for r in deq))
    saved = [row["saved_mb"] for row in tied]
    assert saved == sorted(saved) and saved[0] < saved[-1]
    depths = [row["cap"] for row in tied]
    steps = [(saved[i + 1] - saved[i]) / (depths[i + 1] - depths[i]) for i in range(len(saved) - 1)]
    assert max(steps) == pytest.approx(min(steps), rel=1e-6)  # the same bytes per application


def test_held_for_backward_ignores_dropped_graphs_and_parameters():
    weight = torch.randn(64, requires_grad=True)
    with puzzle_runs.HeldForBackward(exclude=[weight]) as held:
        kept = (weight * torch.randn(64)).exp().sum()
        dropped = torch.randn(1000).requires_grad_().exp().sum()
        del dropped
    assert held.bytes == 2 * 64 * 4  # the other factor of the product and exp's output
    kept.backward()


def test_small_helpers():
    rows = [{"max_iter": 4, "accuracy": 0.5}, {"max_iter": 8, "accuracy": 0.9}]
    rows.append({"max_iter": 16, "accuracy": 0.9})
    assert puzzle_runs.best_cap(rows)["max_iter"] == 16  # ties: the largest cap
    assert family_spec("sudoku").hardest([36, 31, 26]) == 26
    assert family_spec("mazes").hardest([7, 14, 21]) == 21
    assert puzzle_runs.linear_fit({16: 5.0, 64: 17.0, 256: 65.0}) == pytest.approx((1.0, 0.25))
    assert puzzles.nearest([7, 14, 21], 2 * 7) == 14
    assert puzzles.percent([0.5, 1.0]) == "75.0 (35.4)" and puzzles.percent([None]) is None


def test_a_finished_run_is_read_not_repeated(tmp_path, monkeypatch):
    (tmp_path / "summary.json").write_text('{"tests": {}}')
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\n')
    monkeypatch.setattr(puzzle_runs, "run_cli", lambda *a, **k: pytest.fail("ran again"))
    result = puzzle_runs.train(tmp_path, ["--task", "puzzles"])
    assert result["read"] and result["wall_seconds"] is None and result["history"] == [{"epoch": 1}]


def test_an_analysis_kept_with_the_same_options_is_read(tiny, monkeypatch):
    _, out = tiny
    run = out / "puzzles" / "prefix_sums-deq-seed0"
    options = dict(factor=10, extra_sizes=(16,), extra_puzzles=4)  # as the part asked
    kept = puzzle_runs.analyzed(run, True, **options)
    monkeypatch.setattr(puzzle_runs, "analyze", lambda *a, **k: {"again": True})
    assert puzzle_runs.analyzed(run, True, **options) == kept and "16" in kept["extra"]
    assert puzzle_runs.analyzed(run, True, **{**options, "factor": 5}) == {"again": True}
