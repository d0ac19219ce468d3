"""Whether runs stay at their fixed point: the residual warning, the summary's equilibrium entry,
the residual panel, and fixed-point reuse across epochs."""

import json

import pytest
import torch
from tiny_runs import tiny

from equilibria.cli import main
from equilibria.config import Config, ConfigError
from equilibria.training.equilibrium import (
    adjoint_warning,
    epoch_warnings,
    equilibrium_summary,
    residual_warning,
)
from equilibria.training.reuse import FixedPointStore


def test_residual_warning_fires_only_above_its_threshold():
    assert residual_warning({"train_residual": 2e-2}, 1e-2) is not None
    assert "2.0e-02" in residual_warning({"train_residual": 2e-2}, 1e-2)
    assert residual_warning({"train_residual": 5e-3}, 1e-2) is None
    assert residual_warning({"train_residual": 2e-2}, 0.0) is None  # 0: never
    assert residual_warning({"train_loss": 1.0}, 1e-2) is None  # an explicit model
    # the contrastive task's two views: the worse one counts
    assert residual_warning({"first_residual": 1e-3, "second_residual": 3e-2}, 1e-2) is not None


def test_equilibrium_summary_names_the_epochs_that_warned():
    history = [
        {"epoch": 1, "train_residual": 5e-3, "test_residual": 1e-4, "test_converged": 1.0},
        {"epoch": 2, "train_residual": 4e-2, "test_residual": 1e-3, "test_converged": 0.9},
        {"epoch": 3, "train_residual": 2e-2, "test_residual": 2e-3, "test_converged": 0.8},
    ]
    summary = equilibrium_summary(history, "test", 1e-2)
    assert summary["warned_epochs"] == [2, 3]
    assert summary["train_residual_max"] == 4e-2 and summary["train_residual_final"] == 2e-2
    assert summary["test_converged"] == 0.8 and "4.0e-02" in summary["warning"]
    quiet = equilibrium_summary(history[:1], "test", 1e-2)
    assert quiet["warned_epochs"] == [] and quiet["warning"] is None
    assert equilibrium_summary([{"epoch": 1, "train_loss": 1.0}], "test", 1e-2) is None


def test_fixed_point_store_returns_what_it_kept_and_zeros_for_the_rest():
    store = FixedPointStore(6)
    assert store.start(torch.tensor([0, 1]), torch.device("cpu")) is None
    state = (torch.randn(2, 3, 4), torch.randn(2, 5))
    store.keep(torch.tensor([4, 1]), state)
    start = store.start(torch.tensor([1, 4]), torch.device("cpu"))
    assert isinstance(start, tuple) and len(start) == 2
    torch.testing.assert_close(start[0], state[0].flip(0))
    torch.testing.assert_close(start[1], state[1].flip(0))
    mixed = store.start(torch.tensor([1, 2]), torch.device("cpu"))
    torch.testing.assert_close(mixed[0][0], state[0][1])
    assert not mixed[0][1].any() and not mixed[1][1].any()  # example 2: never stored
    assert store.start(torch.tensor([0, 3]), torch.device("cpu")) is None
    single = FixedPointStore(3)
    single.keep(torch.tensor([2]), torch.ones(1, 4))
    assert torch.equal(single.start(torch.tensor([2]), torch.device("cpu")), torch.ones(1, 4))
    assert single.nbytes == 3 * 4 * 4


def test_reuse_is_refused_where_it_has_no_meaning():
    with pytest.raises(ConfigError, match="deq.init=zeros or deq.reuse=false"):
        Config().override(["deq.reuse=true", "deq.init=joint"])
    with pytest.raises(ConfigError, match="model.arch=resnet"):
        Config().override(["deq.reuse=true", "model.arch=resnet"])
    with pytest.raises(ConfigError, match="run.task=lm"):
        Config().override(["deq.reuse=true", "run.task=lm"])


def test_training_starts_each_example_where_it_last_ended(tmp_path, monkeypatch):
    from equilibria.classify import trainer as trainer_module

    starts: list[object] = []
    original = trainer_module.train_step

    def recording(*args, solve=None, **kwargs):
        starts.append(None if solve is None else solve["z0"])
        return original(*args, solve=solve, **kwargs)

    monkeypatch.setattr(trainer_module, "train_step", recording)
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *tiny("deq.reuse=true", "data.shift=0")]) == 0
    assert starts[:3] == [None, None, None]  # epoch 1: nothing stored yet
    assert all(isinstance(s, tuple) for s in starts[3:]) and len(starts) == 6
    summary = json.loads((out / "summary.json").read_text())
    assert summary["equilibrium"]["train_residual_final"] is not None


def test_a_run_off_equilibrium_warns_in_its_epoch_line_and_summary(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--out", str(out), *tiny("deq.residual_warning=1e-12")])
    assert code == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch")]
    assert lines and all("WARNING: training solves are not at equilibrium" in x for x in lines)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["equilibrium"]["warned_epochs"] == [1, 2]
    assert "deq.max_iter" in summary["equilibrium"]["warning"]
    assert all("warning" in json.loads(row) for row in (out / "metrics.jsonl").open())


def test_adjoint_warning_fires_when_an_adjoint_solve_stopped_above_its_tolerance():
    record = {"train_adjoint_residual": 3e-3, "train_adjoint_converged": 0.75}
    assert "75% of samples" in adjoint_warning(record)
    assert "3.0e-03" in adjoint_warning(record)
    assert adjoint_warning({"train_adjoint_residual": 1e-6, "train_adjoint_converged": 1.0}) is None
    assert adjoint_warning({"train_residual": 1e-6}) is None  # no adjoint solve ran
    both = epoch_warnings({"train_residual": 5e-2, **record}, 1e-2)
    assert len(both) == 2 and "adjoint" in both[1]


def test_equilibrium_summary_reports_the_adjoint():
    history = [
        {"epoch": 1, "train_residual": 1e-3, "train_adjoint_residual": 4e-2,
         "train_adjoint_converged": 0.5},
        {"epoch": 2, "train_residual": 1e-3, "train_adjoint_residual": 1e-5,
         "train_adjoint_converged": 1.0},
    ]  # fmt: skip
    summary = equilibrium_summary(history, "test", 1e-2)
    assert summary["adjoint_warned_epochs"] == [1]
    assert summary["adjoint_residual_max"] == 4e-2 and summary["adjoint_converged_final"] == 1.0
    assert "adjoint solves stopped above" in summary["adjoint_warning"]
    quiet = equilibrium_summary([{"epoch": 1, "train_residual": 1e-3}], "test", 1e-2)
    assert "adjoint_warning" not in quiet  # no adjoint solves: no adjoint entries


def test_an_unsolved_adjoint_warns_in_the_epoch_line_metrics_and_summary(tmp_path, capsys):
    out = tmp_path / "run"
    overrides = ("deq.backward=implicit", "deq.backward_max_iter=2", "deq.backward_tol=1e-12")
    assert main(["train", "--out", str(out), *tiny(*overrides)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch")]
    assert lines and all("adjoint res" in x and "adjoint solves stopped above" in x for x in lines)
    rows = [json.loads(row) for row in (out / "metrics.jsonl").open()]
    assert all(row["train_adjoint_converged"] == 0.0 for row in rows)
    assert all(row["train_adjoint_residual"] > 1e-12 for row in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["equilibrium"]["adjoint_warned_epochs"] == [1, 2]
    assert "deq.backward_max_iter" in summary["equilibrium"]["adjoint_warning"]


def test_a_step_records_its_adjoint_solve_once_the_backward_has_run():
    import equilibria as eq
    from equilibria.cells import TanhCell
    from equilibria.training.metrics import Meter, solve_sums

    deq = eq.DEQ(TanhCell(16, contraction=0.5), tol=1e-6, max_iter=60, backward="implicit")
    x = torch.randn(8, 16)
    out = deq(x)
    assert solve_sums(deq.stats)["adjoint_solves"] == 0  # no backward yet: nothing to record
    out.sum().backward()
    meter = Meter()
    meter.add(**solve_sums(deq.stats), loss=1.0, samples=8, steps=1)
    means = meter.means()
    assert means["train_adjoint_converged"] == 1.0 and means["train_adjoint_residual"] <= 1e-6
    assert adjoint_warning(means) is None
    meter.add(**solve_sums(deq.stats))
    assert meter.means()["train_adjoint_residual"] == pytest.approx(means["train_adjoint_residual"])
    assert Meter().means()["train_adjoint_residual"] is None  # a step without an adjoint solve
