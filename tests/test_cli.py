"""The `equilibria` command line: train and eval end to end on tiny runs, and its errors."""

import json
import subprocess
import sys

import pytest
import torch
from tiny_runs import tiny

from equilibria.cli import main


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_train_writes_every_output_and_eval_reads_them(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, _ = run_cli(capsys, "train", "--out", out, *tiny())
    assert code == 0
    for name in (
        "config.json",
        "metrics.jsonl",
        "checkpoint.pt",
        "summary.json",
        "curves.png",
        "residuals.png",
        "accuracy_vs_nfe.png",
    ):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert {"test_accuracy", "mean_forward_nfe", "train_seconds"} <= set(summary)
    assert 0 <= summary["test_accuracy"] <= 1 and summary["mean_forward_nfe"] >= 1
    assert [row["max_iter"] for row in summary["elastic"]] == [1, 2]
    assert set(summary["residual_traces"]) == {"picard", "anderson", "broyden"}
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2] and records[-1]["step"] == 6
    assert records[-1]["test_accuracy"] == summary["test_accuracy"]
    assert "epoch 2/2" in stdout and "test accuracy" in stdout

    # the written config is a valid config file that reproduces the run's settings
    code, _, _ = run_cli(
        capsys, "train", "--config", out / "config.json", "--out", tmp_path / "again"
    )
    assert code == 0
    again = json.loads((tmp_path / "again" / "metrics.jsonl").read_text().splitlines()[-1])
    assert again["test_accuracy"] == records[-1]["test_accuracy"]

    code, stdout, _ = run_cli(
        capsys, "eval", out, "--solver", "broyden", "--tol", "0", "--max-iter", "3"
    )
    assert code == 0 and "mean NFE   3.0" in stdout
    code, stdout, _ = run_cli(
        capsys, "eval", out / "checkpoint.pt", "--sweep", "1,3", "--out", tmp_path / "ev"
    )
    assert code == 0 and "max_iter 1" in stdout and "max_iter 3" in stdout
    evaluation = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert [r["max_iter"] for r in evaluation["results"]] == [1, 3]
    assert (tmp_path / "ev" / "accuracy_vs_nfe.png").is_file()


def test_eval_without_options_reproduces_the_final_test_accuracy(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(capsys, "train", "--out", out, *tiny("epochs=1"))[0] == 0
    summary = json.loads((out / "summary.json").read_text())
    code, _, _ = run_cli(capsys, "eval", out, "--out", tmp_path / "ev")
    result = json.loads((tmp_path / "ev" / "eval.json").read_text())["results"][0]
    assert code == 0 and result["accuracy"] == summary["test_accuracy"]
    assert result["forward_nfe"] == summary["mean_forward_nfe"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "chanels=4"], "unknown config key 'chanels' (did you mean 'channels'?)"),
        (
            ["train", "--device", "cuda"] if not torch.cuda.is_available() else ["train", "lr=-1"],
            "run.device='cuda' asks for a GPU" if not torch.cuda.is_available() else "optim.lr",
        ),
        (
            ["train", "dataset=mnist", "download=false", "--data-dir", "/nonexistent/x"],
            "MNIST train images (train-images-idx3-ubyte) not found: looked in /nonexistent/x",
        ),
        (["train", "batch_size=5000"], "data.batch_size=5000 is larger than the 1442"),
        (["eval", "/nonexistent/run"], "no checkpoint at /nonexistent/run"),
    ],
)
def test_user_mistakes_exit_2_with_one_clear_line(tmp_path, capsys, argv, message):
    code, _, err = (
        run_cli(capsys, *argv, "--out", tmp_path / "o")
        if argv[0] == "train"
        else run_cli(capsys, *argv)
    )
    assert code == 2
    assert message in err and "Traceback" not in err
    assert err.startswith("equilibria: error: ")


def test_an_existing_run_is_never_overwritten(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(capsys, "train", "--out", out, *tiny("epochs=1"))[0] == 0
    code, _, err = run_cli(capsys, "train", "--out", out, *tiny("epochs=1"))
    assert code == 2 and f"continue it with --resume {out}" in err
    code, stdout, _ = run_cli(capsys, "train", "--resume", out)
    assert code == 0 and "already finished its 1 epochs" in stdout
    code, _, err = run_cli(capsys, "train", "--resume", out, "model.channels=8,8")
    assert code == 2 and "model.channels cannot change when resuming" in err


def test_bad_eval_options_are_rejected_by_the_parser(tmp_path, capsys):
    for option in (
        ["--solver", "secant"],
        ["--sweep", "1,x"],
        ["--max-iter", "0"],
        ["--tol", "-1"],
    ):
        with pytest.raises(SystemExit) as stop:
            main(["eval", str(tmp_path), *option])
        assert stop.value.code == 2
    assert "choose one of picard, anderson, broyden" in capsys.readouterr().err


def test_missing_training_extras_name_the_install_command(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # makes `import tqdm` fail
    code, _, err = run_cli(capsys, "train", "--out", tmp_path / "o", *tiny())
    assert code == 2
    assert "needs the package 'tqdm'" in err and 'pip install "equilibria[train]"' in err


def test_module_entry_point_lists_the_config_keys():
    result = subprocess.run(
        [sys.executable, "-m", "equilibria", "train", "--show-keys"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0 and "[deq]" in result.stdout and "eval_max_iter" in result.stdout
