"""`load_run`: a saved run of each task read back as the model its trainer held (the same
outputs as the evaluation paths), with its config, summary and what its inputs are made with;
checkpoints written before the image record read back through the data set; every mistake is one
clear line."""

import dataclasses
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from test_lm import TINY_LM
from test_ssl_train import TINY_SSL
from tiny_runs import tiny

import equilibria.classify.task as classify_task
from equilibria.classify.engine import evaluate
from equilibria.classify.setup import image_record, training_data
from equilibria.cli import main
from equilibria.config import Config, ConfigError
from equilibria.data import ImageData, Vocabulary
from equilibria.lm.engine import evaluate as evaluate_text
from equilibria.lm.restore import load_language_model
from equilibria.lm.task import training_text
from equilibria.models import build_model
from equilibria.ssl.model import ContrastiveModel, build_contrastive_model
from equilibria.ssl.probe import probe_backbone
from equilibria.tasks import LoadedRun, load_run, tasks_with
from equilibria.training import Runtime
from equilibria.training.checkpoint import (
    CheckpointError,
    load_checkpoint,
    restore_model,
    save_checkpoint,
)

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train(out: Path, *overrides: str) -> Path:
    assert main(["train", "--out", str(out), *overrides]) == 0
    return out


@pytest.fixture(scope="module")
def classify_run(tmp_path_factory):
    """A tiny MDEQ on digits that keeps a weight average (what its tests are of)."""
    out = tmp_path_factory.mktemp("classify") / "run"
    return train(out, *tiny("optim.epochs=1", "optim.average=0.5", "run.sweep=1"))


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    return train(tmp_path_factory.mktemp("lm") / "run", *TINY_LM, "optim.epochs=1")


@pytest.fixture(scope="module")
def ssl_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ssl") / "run"
    return train(out, *TINY_SSL, "optim.epochs=1", "ssl.probe_init=false")


def images(count: int, shape: tuple[int, ...], top: int) -> torch.Tensor:
    return torch.randint(0, top + 1, (count, *shape), generator=torch.Generator().manual_seed(0))


def copy_with(run: Path, out: Path, **changes) -> Path:
    """A copy of `run`'s checkpoint (only) in `out`, with `changes` to its contents."""
    checkpoint = load_checkpoint(run)
    out.mkdir()
    save_checkpoint(out / "checkpoint.pt", **{**checkpoint, **changes})
    return out


def test_the_three_tasks_can_be_loaded():
    assert {"classify", "lm", "ssl"} <= {task.name for task in tasks_with("load_model")}


def test_a_classifier_is_the_weight_average_the_trainer_tested(classify_run):
    run = load_run(classify_run)
    assert isinstance(run, LoadedRun) and run.task == "classify"
    assert run.path == classify_run / "checkpoint.pt" and run.device == torch.device("cpu")
    assert run.config == Config.from_dict(json.loads((classify_run / "config.json").read_text()))
    assert run.config == run.config.for_task() and run.config.optim.average == 0.5
    assert run.summary == json.loads((classify_run / "summary.json").read_text())
    assert not run.model.training

    # the test accuracy the run reported (that of the weight average), from the loaded model
    data = training_data(run.config)
    batch = run.config.data.eval_batch_size
    result = evaluate(run.model, data, data.test, Runtime(), batch_size=batch)
    assert result["accuracy"] == run.summary["test_accuracy"]
    assert result["loss"] == pytest.approx(run.summary["test_loss"], rel=1e-6)

    # what it needs of its inputs came from the checkpoint, and matches the data set's
    assert isinstance(run.data, ImageData) and len(run.data.train) == 0
    assert (run.data.shape, run.data.classes) == (data.shape, data.classes) == ((1, 8, 8), 10)
    assert (run.data.mean, run.data.std, run.data.max_value) == (data.mean, data.std, 16)
    pixels = images(5, data.shape, 16).to(torch.uint8)
    x = run.data.inputs(pixels)
    assert torch.equal(x, data.inputs(pixels))

    # the same logits as the model `equilibria eval` rebuilds; the raw weights give others
    checkpoint = load_checkpoint(classify_run)
    rebuilt = build_model(run.config, data.shape, data.classes)
    restore_model(rebuilt, checkpoint["average"], "eval")
    with torch.no_grad():
        logits = run.model(x)
        assert logits.shape == (5, 10)
        assert torch.equal(logits, rebuilt.eval()(x))
        restore_model(rebuilt, checkpoint["model"], "raw")
        assert not torch.equal(logits, rebuilt(x))


def test_a_language_model_scores_text_with_its_vocabulary(lm_run):
    run = load_run(lm_run, device="cpu")
    assert run.task == "lm" and run.config.run.task == "lm" and not run.model.training
    assert run.config == Config.from_dict(json.loads((lm_run / "config.json").read_text()))
    assert isinstance(run.data, Vocabulary)
    text = training_text(run.config)
    assert run.data == text.vocab
    tokens = run.data.encode("def f(x):")
    assert run.data.decode(tokens) == "def f(x):"

    lm = run.config.lm
    result = evaluate_text(
        run.model,
        text,
        seq_len=lm.seq_len,
        memory=lm.memory,
        characters=lm.eval_chars,
        batch_size=run.config.data.eval_batch_size,
        device=run.device,
    )
    assert result["bpc"] == run.summary["val_bpc"]
    assert result["accuracy"] == run.summary["val_accuracy"]

    _, vocab, sampled = load_language_model(lm_run, None)  # what `equilibria sample` reads
    assert vocab == run.data
    with torch.no_grad():
        logits = run.model(tokens[None])
        assert logits.shape == (1, len(tokens), len(vocab))
        assert torch.equal(logits, sampled.eval()(tokens[None]))


def test_a_contrastive_backbone_gives_the_features_it_was_probed_on(ssl_run):
    run = load_run(ssl_run, device=torch.device("cpu"))
    assert run.task == "ssl" and isinstance(run.model, ContrastiveModel)
    assert not run.model.training and run.summary["backbone"] == "mdeq"
    data = training_data(run.config)
    assert (run.data.shape, run.data.mean, run.data.std) == (data.shape, data.mean, data.std)

    s = run.config.ssl
    probe = probe_backbone(
        run.model.backbone,
        data,
        run.device,
        l2=s.probe_l2,
        iters=s.probe_iters,
        batch_size=run.config.data.eval_batch_size,
    )
    assert probe["test_accuracy"] == run.summary["probe_test_accuracy"]

    rebuilt = build_contrastive_model(run.config, data.shape[0])
    restore_model(rebuilt, load_checkpoint(ssl_run)["model"], "ssl")
    x = run.data.inputs(images(3, data.shape, 16).to(torch.uint8))
    with torch.no_grad():
        features = run.model.backbone(x)
        assert features.shape == (3, run.summary["feature_dim"])
        assert torch.equal(features, rebuilt.eval().backbone(x))


def test_older_checkpoints_take_the_image_record_from_the_data_set(classify_run, ssl_run, tmp_path):
    new = load_run(classify_run)
    record = load_checkpoint(classify_run)["data"]
    first = {key: record[key] for key in ("name", "shape", "classes")}  # all they held
    old = load_run(copy_with(classify_run, tmp_path / "classify", data=first))
    assert old.summary is None  # the folder holds no summary.json
    assert image_record(old.data) == image_record(new.data)
    x = old.data.inputs(images(4, (1, 8, 8), 16).to(torch.uint8))
    with torch.no_grad():
        assert torch.equal(old.model(x), new.model(x))

    new = load_run(ssl_run)
    contents = {k: v for k, v in load_checkpoint(ssl_run).items() if k != "data"}
    folder = tmp_path / "ssl"
    folder.mkdir()
    save_checkpoint(folder / "checkpoint.pt", **contents)
    old = load_run(folder / "checkpoint.pt")
    assert image_record(old.data) == image_record(new.data)
    with torch.no_grad():
        assert torch.equal(old.model.backbone(x), new.model.backbone(x))


def test_an_unfinished_run_has_no_summary(classify_run, tmp_path):
    progress = dataclasses.replace(load_checkpoint(classify_run)["progress"], finished=False)
    folder = copy_with(classify_run, tmp_path / "cut", progress=progress)
    shutil.copy(classify_run / "summary.json", folder)
    assert load_run(folder).summary is None


def one_line(error: pytest.ExceptionInfo) -> str:
    text = str(error.value)
    assert "\n" not in text
    return text


def test_every_mistake_is_one_clear_line(classify_run, tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match="the file does not exist") as error:
        load_run(tmp_path / "nowhere")
    assert one_line(error).startswith(f"no checkpoint at {tmp_path / 'nowhere'}")

    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint in .*expected the file") as error:
        load_run(tmp_path / "empty")
    one_line(error)

    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="is not a readable checkpoint") as error:
        load_run(tmp_path / "corrupt")
    one_line(error)

    config = load_checkpoint(classify_run)["config"]
    other = {**config, "model": {**config["model"], "channels": [8, 8]}}
    folder = copy_with(classify_run, tmp_path / "other", config=other)
    with pytest.raises(CheckpointError, match="the weights in the checkpoint do not fit") as error:
        load_run(folder)
    assert one_line(error).startswith(f"{folder / 'checkpoint.pt'}: ")

    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="asks for a GPU") as error:
            load_run(classify_run, device="cuda")
        one_line(error)

    unable = dataclasses.replace(classify_task.TASK, load_model=None)
    monkeypatch.setattr(classify_task, "TASK", unable)
    needs = "holds a run of task 'classify'; load_run needs"
    with pytest.raises(ConfigError, match=needs) as error:
        load_run(classify_run)
    text = one_line(error)
    assert "a language model (a run of 'equilibria train --task lm')" in text
    assert "a contrastive backbone (a run of 'equilibria train --task ssl')" in text
    assert "image classifier" not in text


def test_the_readme_example_runs_on_runs_at_its_paths(classify_run, lm_run, tmp_path):
    """The README's load_run example (not run by test_readme, which has no runs) runs as
    written here, with the runs it names in place."""
    section = README.read_text().split("## From a run to your own code", 1)[1].split("\n## ")[0]
    (block,) = re.findall(r"```py\n(.*?)```", section, re.S)
    (tmp_path / "runs").mkdir()
    shutil.copytree(classify_run, tmp_path / "runs" / "digits")
    shutil.copytree(lm_run, tmp_path / "runs" / "lm")
    namespace = {"images": images(4, (1, 8, 8), 16).to(torch.uint8)}
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(compile(block, "README.md load_run example", "exec"), namespace)
    finally:
        os.chdir(cwd)
