"""Checkpoints: atomic writes, exact resumption after Ctrl-C, clear errors for bad files."""

import math
import os
import signal
import subprocess
import sys
import time
from subprocess import PIPE

import pytest
import torch
from tiny_runs import tiny

from equilibria import files as files_module
from equilibria.config import Config
from equilibria.models import build_model
from equilibria.tasks.run import run_task
from equilibria.training import CheckpointError, load_checkpoint, restore_model
from equilibria.training import checkpoint as checkpoint_module
from equilibria.training.checkpoint import save_checkpoint


def quiet(line: str) -> None:
    pass


def timeless(history):
    return [{k: v for k, v in row.items() if "seconds" not in k} for row in history]


def test_ctrl_c_saves_and_resuming_ends_exactly_like_an_uninterrupted_run(tmp_path):
    # dropout and random shifts make every step random, and the weight average remembers
    # every step: resumption must reproduce all of them
    config = Config().override(
        tiny("epochs=2", "model.dropout=0.2", "data.shift=1", "optim.average=0.9")
    )
    full = run_task(config, tmp_path / "full", log=quiet)
    assert full.status == "finished"

    def ctrl_c(step: int) -> None:
        if step == 4:  # the second step of the second epoch (3 steps per epoch)
            os.kill(os.getpid(), signal.SIGINT)

    cut = run_task(config, tmp_path / "cut", on_step=ctrl_c, log=quiet)
    assert cut.status == "interrupted" and cut.signal == "SIGINT" and cut.summary is None
    saved = load_checkpoint(tmp_path / "cut")
    assert (saved["progress"].epoch, saved["progress"].step_in_epoch) == (1, 1)
    assert saved["progress"].global_step == 4 and len(saved["history"]) == 1
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored

    resumed = run_task(config, tmp_path / "cut", checkpoint=saved, log=quiet)
    assert resumed.status == "finished"
    final = load_checkpoint(tmp_path / "cut")
    reference = load_checkpoint(tmp_path / "full")
    assert timeless(final["history"]) == timeless(reference["history"])
    for entry in ("model", "average"):
        for name, value in reference[entry].items():
            assert torch.equal(final[entry][name], value), (entry, name)
    assert resumed.summary["test_accuracy"] == full.summary["test_accuracy"]
    assert math.isclose(resumed.summary["train_seconds"], final["progress"].train_seconds)


def test_a_failed_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    contents = dict(
        config={},
        model={"w": torch.ones(2)},
        optimizer={},
        scheduler={},
        progress=checkpoint_module.Progress(epoch=1),
        history=[],
        meter={},
    )
    save_checkpoint(path, **contents)
    before = path.read_bytes()

    def broken_replace(source, target):
        raise OSError("disk full")

    monkeypatch.setattr(files_module.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, **{**contents, "model": {"w": torch.zeros(2)}})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]  # no temporary left
    assert load_checkpoint(tmp_path)["progress"].epoch == 1


class NotAllowed:
    pass


def test_unusable_files_get_clear_errors(tmp_path):
    good = tmp_path / "good.pt"
    save_checkpoint(
        good,
        config={},
        model={},
        optimizer={},
        scheduler={},
        progress=checkpoint_module.Progress(),
        history=[],
        meter={},
    )
    cases = {
        "garbage.pt": (b"definitely not a checkpoint", "not a torch archive"),
        "truncated.pt": (good.read_bytes()[:200], "not a torch archive"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(tmp_path / name)
    torch.save({"weights": torch.ones(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an equilibria training checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    torch.save({"format": "equilibria-checkpoint", "version": 99}, tmp_path / "newer.pt")
    with pytest.raises(CheckpointError, match="format version 99; this equilibria reads"):
        load_checkpoint(tmp_path / "newer.pt")
    torch.save({"format": "equilibria-checkpoint", "version": 1, "model": {}}, tmp_path / "part.pt")
    with pytest.raises(CheckpointError, match="incomplete: it lacks config, optimizer"):
        load_checkpoint(tmp_path / "part.pt")
    torch.save({"format": "equilibria-checkpoint", "thing": NotAllowed()}, tmp_path / "code.pt")
    with pytest.raises(CheckpointError, match="objects other than tensors and plain values"):
        load_checkpoint(tmp_path / "code.pt")
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        load_checkpoint(tmp_path)  # a folder without checkpoint.pt


def test_weights_that_do_not_fit_the_model_are_listed():
    small = build_model(Config().override(["model.channels=4,4"]), (1, 8, 8), 10)
    large = build_model(Config().override(["model.channels=8,8"]), (1, 8, 8), 10)
    weights = dict(large.state_dict())
    weights["extra.weight"] = torch.zeros(1)
    del weights["head.classify.bias"]
    with pytest.raises(CheckpointError) as error:
        restore_model(small, weights, "run/checkpoint.pt")
    message = str(error.value)
    assert "do not fit the model" in message and "missing: head.classify.bias" in message
    assert (
        "unexpected: extra.weight" in message
        and "stem.0.weight (checkpoint (8, 1, 3, 3)" in message
    )


def interrupt_when(process, condition, timeout: float = 120.0) -> tuple[str, str]:
    """Send SIGINT to `process` once `condition()` holds; its output once it has exited."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    return process.communicate(timeout=timeout)


@pytest.mark.slow
def test_ctrl_c_on_the_command_line_saves_and_resume_continues(tmp_path):
    out = tmp_path / "run"
    train = [sys.executable, "-m", "equilibria", "train"]
    first = subprocess.Popen(
        [*train, "--out", str(out), *tiny("epochs=500")], stdout=PIPE, stderr=PIPE, text=True
    )
    _, stderr = interrupt_when(first, (out / "checkpoint.pt").exists)
    assert first.returncode == 130, stderr
    assert "stopped by SIGINT: checkpoint saved to" in stderr and "Traceback" not in stderr
    stopped = load_checkpoint(out)["progress"]
    assert stopped.global_step > 0 and not stopped.finished

    def advanced() -> bool:
        try:
            return load_checkpoint(out)["progress"].global_step > stopped.global_step
        except CheckpointError:  # never: the file is replaced atomically
            raise

    second = subprocess.Popen([*train, "--resume", str(out)], stdout=PIPE, stderr=PIPE, text=True)
    _, stderr = interrupt_when(second, advanced)
    assert second.returncode == 130, stderr
    assert load_checkpoint(out)["progress"].global_step > stopped.global_step


def test_a_resumed_checkpoint_whose_optimizer_state_does_not_fit_is_explained(tmp_path, capsys):
    from equilibria.cli import main

    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *tiny("epochs=1")]) == 0
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    state["progress"]["finished"] = False
    state["optimizer"]["param_groups"] = []
    torch.save(state, out / "checkpoint.pt")
    capsys.readouterr()
    assert main(["train", "--resume", str(out)]) == 2
    error = capsys.readouterr().err
    assert "the optimizer, schedule or metrics in" in error and "Traceback" not in error


def test_a_run_being_trained_refuses_a_second_process_in_one_line(tmp_path, capsys):
    from equilibria.cli import main
    from equilibria.training.run_lock import hold_run

    out = tmp_path / "run"
    assert main(["train", "--out", str(out), *tiny("epochs=1")]) == 0
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    state["progress"]["finished"] = False  # as a run that is still training
    torch.save(state, out / "checkpoint.pt")
    before = (out / "checkpoint.pt").read_bytes()
    # another process holds the run, as a run still training does
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import time; from equilibria.training.run_lock import hold_run\n"
         f"with hold_run({str(out)!r}):\n print('held', flush=True); time.sleep(60)"],
        stdout=PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        capsys.readouterr()
        assert main(["train", "--resume", str(out)]) == 2
        error = capsys.readouterr().err
        assert f"is being trained by process {holder.pid}" in error
        assert len(error.strip().splitlines()) == 1
        assert (out / "checkpoint.pt").read_bytes() == before  # nothing was touched
        # a new run into the folder is refused the same way
        assert main(["train", "--out", str(out), *tiny("epochs=1")]) == 2
        assert f"process {holder.pid}" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    with hold_run(out):  # the lock went with the process that held it
        pass
