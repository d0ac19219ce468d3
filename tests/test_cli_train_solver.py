"""`equilibria train-solver` and `equilibria eval --solver neural` end to end on a tiny run."""

import json

import pytest
from tiny_runs import tiny

import equilibria as eq
from equilibria.cli import main


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_train_solver_saves_beside_the_checkpoint_and_eval_uses_it(tmp_path, capsys):
    run = tmp_path / "run"
    assert run_cli(capsys, "train", "--out", run, *tiny())[0] == 0
    code, out, err = run_cli(capsys, "eval", run, "--solver", "neural")
    assert code == 2 and "equilibria train-solver" in err  # not trained yet: says how
    code, out, _ = run_cli(
        capsys, "train-solver", run, "--epochs", "2", "--batches", "2", "--batch-size", "16"
    )
    assert code == 0 and "saved to" in out
    assert "% of the model" in out
    solver = eq.NeuralSolver.load(run / "neural_solver.pt")
    assert solver.num_parameters() > 0 and solver.config["structure"] == "tuple"
    code, out, _ = run_cli(capsys, "eval", run, "--solver", "neural", "--out", tmp_path / "ev")
    assert code == 0 and "solver=neural" in out
    result = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert result["solver"] == "neural" and 0 <= result["results"][0]["accuracy"] <= 1
    code, out, _ = run_cli(capsys, "eval", run, "--solver", "neural", "--sweep", "1,2")
    assert code == 0 and "max_iter 2" in out


def test_train_solver_errors_are_one_clear_line(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train-solver", tmp_path / "missing")
    assert code == 2 and "no checkpoint" in err
    with pytest.raises(SystemExit) as exit_info:  # argparse rejects it before anything runs
        run_cli(capsys, "train-solver", tmp_path, "--epochs", "0")
    assert exit_info.value.code == 2
    assert "--epochs: expected an integer >= 1, got '0'" in capsys.readouterr().err


def test_train_solver_rejects_a_negative_initializer_width(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(capsys, "train-solver", tmp_path, "--init-width", "-1")
    assert exit_info.value.code == 2
    assert "--init-width: expected an integer >= 0, got '-1'" in capsys.readouterr().err


def test_train_solver_and_eval_on_a_language_model(tmp_path, capsys):
    from test_lm import TINY_LM

    run = tmp_path / "lm"
    assert run_cli(capsys, "train", "--out", run, *TINY_LM, "optim.epochs=1")[0] == 0
    code, out, err = run_cli(
        capsys, "train-solver", run, "--epochs", "1", "--batches", "2", "--batch-size", "4",
        "--init-epochs", "2", "--init-width", "4",
    )  # fmt: skip
    assert code == 0, err
    assert "% of the model" in out and "saved to" in out
    solver = eq.NeuralSolver.load(run / "neural_solver.pt")
    assert solver.config["x_shape"] == (12, 16) and solver.config["init_skip"] is False
    code, out, err = run_cli(capsys, "eval", run, "--solver", "neural", "--max-iter", "3")
    assert code == 0, err
    assert "solver=neural" in out and "mean NFE" in out
    explicit = tmp_path / "explicit"
    argv = [*TINY_LM, "lm.network=explicit", "lm.layers=2", "optim.epochs=1"]
    assert run_cli(capsys, "train", "--out", explicit, *argv)[0] == 0
    code, _, err = run_cli(capsys, "train-solver", explicit)
    assert code == 2 and "runs no solver" in err
