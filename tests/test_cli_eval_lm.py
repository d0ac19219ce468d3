"""`equilibria eval` of language models: tiny runs of `equilibria train --task lm` on the bundled
text, evaluated at their own settings, over a sweep, with a learned solver, and the mistakes."""

import json
import shutil

import pytest
import torch
from test_lm import TINY_LM

import equilibria as eq
from equilibria.cli import main
from equilibria.data.text import text_data
from equilibria.lm.engine import evaluate
from equilibria.models import DEQTransformer


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def deq_run(tmp_path_factory):
    """A DEQ-Transformer trained for 6 steps on Python's bundled documentation text."""
    out = tmp_path_factory.mktemp("lm") / "deq"
    assert main(["train", "--out", str(out), *TINY_LM]) == 0
    return out


@pytest.fixture(scope="module")
def explicit_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lm") / "explicit"
    argv = ["train", "--out", str(out), *TINY_LM, "lm.network=explicit", "lm.layers=2"]
    assert main([*argv, "optim.epochs=1"]) == 0
    return out


def test_eval_without_options_reproduces_the_runs_validation(deq_run, tmp_path, capsys):
    summary = json.loads((deq_run / "summary.json").read_text())
    code, out, err = run_cli(capsys, "eval", deq_run, "--out", tmp_path / "ev")
    assert code == 0, err
    evaluation = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert evaluation["split"] == "validation"
    (result,) = evaluation["results"]
    assert result["bpc"] == summary["val_bpc"] and result["accuracy"] == summary["val_accuracy"]
    assert result["forward_nfe"] == summary["val_forward_nfe"] == 6
    assert result["residual"] == summary["val_residual"]
    assert result["characters"] == summary["val_characters"] == 96
    assert "pydoc-topics validation text, 96 characters (the config's eval settings)" in out
    assert f"bits/char {summary['val_bpc']:.4f}" in out and "mean NFE   6.0" in out

    code, out, _ = run_cli(capsys, "eval", deq_run, "--split", "train", "--batch-size", "3")
    assert code == 0 and "pydoc-topics train text, 96 characters" in out
    assert f"bits/char {summary['val_bpc']:.4f}" not in out  # other characters, other score


def test_solver_settings_and_a_sweep_of_caps(deq_run, tmp_path, capsys):
    code, out, _ = run_cli(
        capsys, "eval", deq_run, "--solver", "broyden", "--tol", "0", "--max-iter", "3"
    )
    assert code == 0 and "solver=broyden, tol=0.0, max_iter=3" in out and "mean NFE   3.0" in out

    code, out, err = run_cli(capsys, "eval", deq_run, "--sweep", "4,1,2", "--out", tmp_path / "ev")
    assert code == 0, err
    rows = json.loads((tmp_path / "ev" / "eval.json").read_text())["results"]
    assert [row["max_iter"] for row in rows] == [1, 2, 4]
    for row in rows:
        assert 1 <= row["forward_nfe"] <= row["max_iter"] and row["bpc"] > 0
        assert f"max_iter {row['max_iter']}" in out
    assert rows[0]["bpc"] != rows[-1]["bpc"]  # the cap changes the answer
    assert (tmp_path / "ev" / "bpc_vs_nfe.png").stat().st_size > 0


def test_neural_solver_is_read_from_beside_the_checkpoint(deq_run, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(deq_run / "checkpoint.pt", run / "checkpoint.pt")
    code, _, err = run_cli(capsys, "eval", run, "--solver", "neural")
    assert code == 2 and "equilibria train-solver" in err and "Traceback" not in err

    x = torch.zeros(1, 12, 16)  # (batch, lm.seq_len, lm.width): the DEQ input's shape
    eq.NeuralSolver.for_model((x,), torch.zeros_like(x), init_width=4).save(
        run / "neural_solver.pt"
    )
    code, out, err = run_cli(capsys, "eval", run, "--solver", "neural", "--out", tmp_path / "ev")
    assert code == 0, err
    assert "(solver=neural)" in out and "mean NFE" in out
    evaluation = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert evaluation["solver"] == "neural" and 1 <= evaluation["results"][0]["forward_nfe"] <= 6
    code, out, _ = run_cli(capsys, "eval", run, "--solver", "neural", "--sweep", "1,3")
    assert code == 0 and "max_iter 3" in out


def test_an_explicit_network_takes_no_solver_options(explicit_run, capsys):
    code, out, _ = run_cli(capsys, "eval", explicit_run)
    summary = json.loads((explicit_run / "summary.json").read_text())
    assert code == 0 and f"bits/char {summary['val_bpc']:.4f}" in out and "NFE" not in out
    for option in (["--solver", "anderson"], ["--tol", "0"], ["--max-iter", "2"], ["--sweep", "2"]):
        code, _, err = run_cli(capsys, "eval", explicit_run, *option)
        assert code == 2 and err.count("\n") == 1, err
        assert "holds an explicit transformer (lm.network=explicit), which runs no solver" in err


def test_misused_options_and_a_changed_text_are_one_clear_line(deq_run, tmp_path, capsys):
    code, _, err = run_cli(capsys, "eval", deq_run, "--data-dir", tmp_path)
    assert code == 2 and "--data-dir applies to image classifiers" in err
    code, _, err = run_cli(capsys, "eval", deq_run, "--sweep", "1,2", "--max-iter", "3")
    assert code == 2 and "drop --max-iter" in err

    # the run's text file changed (here: its config points elsewhere) since training
    checkpoint = torch.load(deq_run / "checkpoint.pt", weights_only=True)
    (tmp_path / "other.txt").write_text("abc abd " * 200, encoding="utf-8")
    (tmp_path / "moved").mkdir()
    for text, message in [
        (tmp_path / "other.txt", "now has another vocabulary (5 characters) than the model"),
        (tmp_path / "missing.txt", "lm.text: no text file at"),
    ]:
        checkpoint["config"]["lm"]["text"] = str(text)
        torch.save(checkpoint, tmp_path / "moved" / "checkpoint.pt")
        code, _, err = run_cli(capsys, "eval", tmp_path / "moved")
        assert code == 2 and message in err and "Traceback" not in err, err


def test_solve_settings_reach_every_solve_the_memory_included():
    torch.manual_seed(0)
    data = text_data("the quick brown fox jumps over the lazy dog. " * 20, "fox", 0.25)
    settings = dict(solver="broyden", tol=0.0, max_iter=3)
    common = dict(seq_len=8, memory=4, characters=64, batch_size=3, device=torch.device("cpu"))
    model = DEQTransformer(len(data.vocab), 16, 2, memory=4, max_iter=7)
    same = DEQTransformer(len(data.vocab), 16, 2, memory=4, **settings)
    same.load_state_dict(model.state_dict())
    for split in ("val", "train"):
        overridden = evaluate(model, data, **common, split=split, solve=settings)
        assert overridden == evaluate(same, data, **common, split=split)
        assert overridden["forward_nfe"] == 3
    assert evaluate(model, data, **common)["forward_nfe"] == 7
    with pytest.raises(ValueError, match="split='test' is not valid; choose one of val, train"):
        evaluate(model, data, **common, split="test")
