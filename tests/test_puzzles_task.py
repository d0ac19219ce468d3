"""The puzzles task end to end on tiny runs (seconds): training each family and network,
evaluating harder sizes, a puzzle file and several starts, loading a run, and the mistakes."""

import json

import pytest
import torch

import equilibria as eq
from equilibria.cli import main
from equilibria.config import Config, ConfigError
from equilibria.puzzles.data import FAMILIES
from equilibria.puzzles.families import FAMILY_SPECS
from equilibria.puzzles.model import PuzzleModel, matched_block_width, parameter_count
from equilibria.puzzles.report import sweep_caps
from equilibria.puzzles.setup import build_puzzle_model

TINY = [
    "--task",
    "puzzles",
    "puzzles.train_puzzles=64",
    "puzzles.test_puzzles=6",
    "puzzles.steps_per_epoch=2",
    "puzzles.breadth=2",
    "puzzles.cache_dir=none",
    "data.batch_size=16",
    "optim.epochs=1",
    "run.progress=false",
]
SMALL = {
    "prefix_sums": ["puzzles.train_size=6", "puzzles.test_sizes=6,12", "puzzles.width=8"],
    "mazes": ["puzzles.train_size=3", "puzzles.test_sizes=3,4", "puzzles.width=8"],
    "sudoku": ["puzzles.train_size=60", "puzzles.test_sizes=60", "puzzles.width=16"],
}


def train(tmp_path, family, *overrides):
    out = tmp_path / family
    argv = ["train", "--out", str(out), *TINY, f"puzzles.family={family}", *SMALL[family]]
    assert main([*argv, "puzzles.test_iterations=1", *overrides]) == 0
    return out


@pytest.fixture(scope="module")
def prefix_run(tmp_path_factory):
    return train(tmp_path_factory.mktemp("puzzles"), "prefix_sums")


@pytest.mark.parametrize("family", ["mazes", "sudoku"])
def test_every_family_trains_and_reports(tmp_path, family, capsys):
    out = train(tmp_path, family)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["family"] == family and summary["breadth"]["vote"]["starts"] == 2
    for name in ("curves.png", "accuracy_vs_iterations.png", "puzzles.png", "checkpoint.pt"):
        assert (out / name).is_file()
    assert f"{family}: solved" in capsys.readouterr().out


def test_a_prefix_run_reports_every_size_with_its_sweep(prefix_run):
    summary = json.loads((prefix_run / "summary.json").read_text())
    assert list(summary["tests"]) == ["6", "12"]
    caps = [row["max_iter"] for row in summary["sweeps"]["12"]]
    assert caps == sweep_caps(12) and caps[-1] == 12  # test_iterations=1 x 12 bits
    assert summary["equilibrium"] is not None
    assert 0 <= summary["breadth"]["residual"]["path_independence"] <= 1
    config = json.loads((prefix_run / "config.json").read_text())
    assert config["deq"]["jacobian_gamma"] == 0.0 and config["data"]["batch_size"] == 16


def test_eval_generates_harder_sizes_and_several_starts(prefix_run, tmp_path, capsys):
    argv = ["eval", prefix_run, "--sizes", "20", "--starts", "3", "--out", tmp_path / "e"]
    assert main([str(a) for a in argv]) == 0
    out = capsys.readouterr().out
    assert "20-bit strings" in out and "starts agree" in out
    record = json.loads((tmp_path / "e" / "eval.json").read_text())
    assert record["starts"] == 3 and (tmp_path / "e" / "puzzles.png").is_file()


def test_eval_reads_a_puzzle_file_and_checks_answers_by_the_rules(prefix_run, tmp_path, capsys):
    file = tmp_path / "bits.txt"
    file.write_text("0110\n101\n1111\n")
    assert main(["eval", str(prefix_run), "--data", str(file), "--max-iter", "20"]) == 0
    out = capsys.readouterr().out
    assert "4-bit strings" in out and "3-bit strings" in out and "pass the rules" in out


def test_eval_of_a_bad_file_is_one_line(prefix_run, tmp_path, capsys):
    file = tmp_path / "bits.txt"
    file.write_text("0110\n10x1\n")
    assert main(["eval", str(prefix_run), "--data", str(file)]) != 0
    err = capsys.readouterr().err
    assert "bits.txt" in err and "puzzle 2" in err and "Traceback" not in err


def test_puzzle_options_are_refused_for_other_tasks(tmp_path, capsys):
    out = tmp_path / "digits"
    argv = ["train", "--out", str(out), "data.train_samples=64", "data.batch_size=32"]
    assert main([*argv, "model.channels=4,4", "optim.epochs=1", "run.progress=false"]) == 0
    capsys.readouterr()
    assert main(["eval", str(out), "--starts", "2"]) != 0
    assert "--starts applies to runs of task puzzles" in capsys.readouterr().err


def test_load_run_gives_a_model_that_solves_ones_own_puzzles(prefix_run):
    run = eq.load_run(prefix_run)
    assert run.task == "puzzles" and run.data is FAMILIES["prefix_sums"]
    puzzles = run.data.generate(4, 10, seed=5)
    with torch.no_grad():
        answer = run.model.answer(run.model.state(puzzles.inputs, max_iter=30), puzzles.inputs)
    assert answer.shape == puzzles.targets.shape
    assert set(answer.unique().tolist()) <= {0, 1}


@pytest.mark.parametrize("network", ["feedforward", "tied"])
def test_explicit_baselines_train_and_take_no_solver_options(tmp_path, network, capsys):
    out = train(tmp_path, "prefix_sums", f"puzzles.network={network}", "puzzles.depth=4")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["breadth"] is None and summary["tests"]["12"]["forward_nfe"] is None
    if network == "tied":  # at its own depth, beside the sweep that iterates it longer
        assert summary["tests_at_depth"]["12"]["max_iter"] == 4
        assert "at its depth 4" in capsys.readouterr().out
    else:
        assert summary["tests_at_depth"] is None
    capsys.readouterr()
    assert main(["eval", str(out), "--max-iter", "3"]) != 0
    assert "runs no solver" in capsys.readouterr().err


def test_the_feedforward_baseline_matches_the_deq_in_parameters():
    for name, spec in FAMILY_SPECS.items():
        width = 16
        block = matched_block_width(spec, width, 6)
        tied = parameter_count(PuzzleModel(spec, width, "tied"))
        feedforward = parameter_count(
            PuzzleModel(spec, width, "feedforward", depth=6, block_width=block)
        )
        assert abs(feedforward - tied) / tied < 0.25, name


def test_a_tied_network_and_a_deq_share_one_cell_shape():
    config = Config().override(["run.task=puzzles", "puzzles.width=8"]).for_task()
    deq = build_puzzle_model(config)
    tied = build_puzzle_model(config.override(["puzzles.network=tied"]))
    assert parameter_count(deq) == parameter_count(tied)
    assert deq.deq.train_settings.max_iter == FAMILY_SPECS["prefix_sums"].train_cap


def test_a_size_the_family_cannot_generate_is_one_line(tmp_path):
    config = Config().override(
        ["run.task=puzzles", "puzzles.family=sudoku", "puzzles.train_size=90"]
    )
    from equilibria.puzzles.setup import puzzle_data

    with pytest.raises(ConfigError, match="puzzles.family=sudoku"):
        puzzle_data(config.override(["puzzles.cache_dir=none"]))


def test_ctrl_c_and_resume_end_exactly_like_an_uninterrupted_run(tmp_path):
    """Random starts, path noise and the early-iteration loss draw random numbers at every
    step: a resumed run must draw the same ones."""
    import os
    import signal

    from equilibria.tasks.run import run_task
    from equilibria.training.checkpoint import load_checkpoint

    overrides = [
        "run.task=puzzles",
        "puzzles.train_puzzles=64",
        "puzzles.test_puzzles=4",
        "puzzles.steps_per_epoch=3",
        "puzzles.breadth=1",
        "puzzles.cache_dir=none",
        "puzzles.path_noise=0.1",
        "puzzles.early_loss=0.5",
        "data.batch_size=8",
        "optim.epochs=2",
        "run.progress=false",
        *SMALL["prefix_sums"],
        "puzzles.test_sizes=6",
        "puzzles.test_iterations=1",
    ]
    config = Config().override(overrides)
    full = run_task(config, tmp_path / "full", log=lambda line: None)

    def ctrl_c(step: int) -> None:
        if step == 4:
            os.kill(os.getpid(), signal.SIGINT)

    cut = run_task(config, tmp_path / "cut", on_step=ctrl_c, log=lambda line: None)
    assert cut.status == "interrupted"
    saved = load_checkpoint(tmp_path / "cut")
    resumed = run_task(config, tmp_path / "cut", checkpoint=saved, log=lambda line: None)
    assert resumed.status == "finished"
    final, reference = load_checkpoint(tmp_path / "cut"), load_checkpoint(tmp_path / "full")
    for name, value in reference["model"].items():
        assert torch.equal(final["model"][name], value), name
    assert resumed.summary["tests"] == full.summary["tests"]
    stored = json.loads((tmp_path / "full" / "config.json").read_text())
    assert stored["deq"]["max_iter"] == 64 and stored["puzzles"]["width"] == 8


def test_a_learned_start_is_refused_where_the_solves_start_at_random(tmp_path, capsys):
    argv = ["train", "--out", str(tmp_path / "run"), *TINY, *SMALL["prefix_sums"]]
    assert main([*argv, "deq.init=joint"]) != 0
    err = capsys.readouterr().err
    assert "deq.init=joint is not available for run.task=puzzles" in err and "Traceback" not in err
