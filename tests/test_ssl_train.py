"""`equilibria train --task ssl` end to end: a tiny run, Ctrl-C, exact resumption, the files."""

import json
import os
import signal
from pathlib import Path

import pytest
import torch

from equilibria.cli import main
from equilibria.config import Config
from equilibria.tasks.run import run_task
from equilibria.training import CheckpointError, load_checkpoint

TINY_SSL = [
    "run.task=ssl",
    "model.channels=4,4",
    "model.expansion=1",
    "model.dropout=0.1",
    "ssl.projection_hidden=8",
    "ssl.projection_dim=4",
    "ssl.probe_iters=30",
    "data.train_samples=64",
    "data.batch_size=32",
    "optim.epochs=2",
    "run.progress=false",
    "run.threads=1",
]


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: these small models only lose time to threads on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def quiet(line: str) -> None:
    pass


def timeless(history):
    return [{k: v for k, v in row.items() if "seconds" not in k} for row in history]


def test_ctrl_c_saves_and_resuming_ends_exactly_like_an_uninterrupted_run(tmp_path):
    config = Config().override(TINY_SSL)
    full = run_task(config, tmp_path / "full", log=quiet)
    assert full.status == "finished"
    summary = json.loads((tmp_path / "full" / "summary.json").read_text())
    assert 0.0 <= summary["probe_test_accuracy"] <= 1.0
    assert 0.0 <= summary["init_probe_test_accuracy"] <= 1.0
    assert summary["train_first_forward_nfe"] > 0 and summary["reuse"] is True
    assert summary["steps"] == 4 and summary["backbone"] == "mdeq"
    assert "linear-probe test accuracy" in full.headline

    def ctrl_c(step: int) -> None:
        if step == 3:  # the first step of the second epoch (2 steps per epoch)
            os.kill(os.getpid(), signal.SIGINT)

    cut = run_task(config, tmp_path / "cut", on_step=ctrl_c, log=quiet)
    assert cut.status == "interrupted" and cut.summary is None
    saved = load_checkpoint(tmp_path / "cut")
    assert (saved["progress"].epoch, saved["progress"].step_in_epoch) == (1, 1)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

    resumed = run_task(config, tmp_path / "cut", checkpoint=saved, log=quiet)
    assert resumed.status == "finished"
    final, reference = load_checkpoint(tmp_path / "cut"), load_checkpoint(tmp_path / "full")
    assert timeless(final["history"]) == timeless(reference["history"])
    for name, value in reference["model"].items():
        assert torch.equal(final["model"][name], value), name
    assert resumed.summary["probe_test_accuracy"] == full.summary["probe_test_accuracy"]
    assert resumed.summary["init_probe_test_accuracy"] == full.summary["init_probe_test_accuracy"]


def test_the_command_line_trains_the_explicit_backbone_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    args = [f"--out={out}", "--task", "ssl", "arch=resnet", "probe_init=false", "probe_every=1"]
    assert main(["train", *args, *TINY_SSL[1:]]) == 0
    printed = capsys.readouterr().out
    assert "linear-probe test accuracy" in printed and "random-init" not in printed
    names = {p.name for p in out.iterdir()}
    assert {"checkpoint.pt", "config.json", "curves.png", "metrics.jsonl", "summary.json"} <= names
    summary = json.loads((out / "summary.json").read_text())
    assert summary["backbone"] == "resnet" and summary["train_first_forward_nfe"] is None
    epochs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [0.0 <= row["probe_test_accuracy"] <= 1.0 for row in epochs] == [True, True]
    assert epochs[-1]["probe_test_accuracy"] == summary["probe_test_accuracy"]
    assert main(["train", "--resume", str(out)]) == 0
    assert "already finished its 2 epochs" in capsys.readouterr().out


def test_a_run_folder_is_not_overwritten_and_other_checkpoints_are_refused(tmp_path):
    config = Config().override([*TINY_SSL, "optim.epochs=1", "ssl.probe_init=false"])
    run_task(config, tmp_path / "run", log=quiet)
    with pytest.raises(CheckpointError, match="already holds a run"):
        run_task(config, tmp_path / "run", log=quiet)
    foreign = dict(load_checkpoint(tmp_path / "run"), task=None)
    with pytest.raises(CheckpointError, match="not from a contrastive"):
        run_task(config, tmp_path / "other", checkpoint=foreign, log=quiet)


SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.slow
@pytest.mark.skipif(
    not (SHARED_DATA / "mnist-t10k-images-idx3-ubyte.gz").is_file(),
    reason="the MNIST test set is not in ../shared/data",
)
def test_a_short_run_on_real_mnist(tmp_path):
    config = Config().override(
        [
            *TINY_SSL,
            "data.dataset=mnist-t10k",
            f"data.data_dir={SHARED_DATA}",
            "data.download=false",
            "data.train_samples=256",
            "data.batch_size=64",
            "model.stem_stride=2",
            "optim.epochs=1",
        ]
    )
    result = run_task(config, tmp_path / "mnist", log=quiet)
    assert result.summary["dataset"] == "mnist-t10k" and result.summary["steps"] == 4
    assert result.summary["probe_test_accuracy"] > 0.2  # 10 classes: well above chance
