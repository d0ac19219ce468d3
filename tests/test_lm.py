"""`equilibria train --task lm` and `equilibria sample`, end to end on tiny runs."""

import json
import os
import signal

import pytest
import torch

from equilibria.cli import main
from equilibria.config import Config
from equilibria.data.text import Vocabulary
from equilibria.lm import generate
from equilibria.models import DEQTransformer
from equilibria.tasks.run import run_task
from equilibria.training.checkpoint import load_checkpoint

TINY_LM = [
    "run.task=lm",
    "lm.seq_len=12",
    "lm.width=16",
    "lm.heads=2",
    "lm.ff_expansion=2",
    "lm.steps_per_epoch=3",
    "lm.eval_chars=96",
    "optim.epochs=2",
    "optim.lr=3e-3",
    "optim.label_smoothing=0",
    "data.batch_size=4",
    "deq.max_iter=4",
    "deq.eval_max_iter=6",
    "run.threads=1",
    "run.progress=false",
]


@pytest.fixture
def corpus(tmp_path):
    words = [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "a",
        "lazy",
        "dog",
        "while",
        "seven",
        "wise",
        "owls",
        "watch",
    ]
    generator = torch.Generator().manual_seed(0)
    picks = torch.randint(len(words), (600,), generator=generator).tolist()
    path = tmp_path / "corpus.txt"
    path.write_text(" ".join(words[i] for i in picks) + ".\n", encoding="utf-8")
    return path


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def quiet(line):
    pass


def test_train_writes_every_output_resumes_and_samples(tmp_path, corpus, capsys):
    out = tmp_path / "run"
    code, stdout, err = run_cli(capsys, "train", "--out", out, "--text", corpus, *TINY_LM)
    assert code == 0, err
    for name in ("config.json", "metrics.jsonl", "checkpoint.pt", "summary.json", "curves.png"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2] and records[-1]["step"] == 6
    assert summary["val_bpc"] == pytest.approx(summary["val_loss"] / 0.6931471805599453)
    assert 0 < summary["val_bpc"] < 8 and summary["val_forward_nfe"] <= 6
    assert summary["tokens_per_second"] > 0 and summary["vocabulary"] == len(
        set(corpus.read_text())
    )
    text = corpus.read_text()
    validation = text[len(text) - int(0.1 * len(text)) :]
    assert (out / "sample.txt").read_text().startswith(validation[:32])  # the prompt
    assert "validation" in stdout and "bits per character" in stdout and "epoch 2/2" in stdout

    code, stdout, _ = run_cli(capsys, "train", "--resume", out)
    assert code == 0 and "already finished" in stdout

    code, stdout, err = run_cli(
        capsys, "sample", out, "--prompt", "the ", "--chars", "40", "--seed", "3"
    )
    assert code == 0 and stdout.startswith("the ") and len(stdout) == len("the ") + 40 + 1
    assert set(stdout[:-1]) <= set(corpus.read_text())
    assert "mean forward NFE per character" in err
    code, again, _ = run_cli(
        capsys, "sample", out, "--prompt", "the ", "--chars", "40", "--seed", "3"
    )
    assert again == stdout  # the seed fixes the draws

    code, _, err = run_cli(capsys, "sample", out, "--prompt", "QUIZ")
    assert code == 2 and "the prompt contains 4 character(s) the model never saw" in err


def test_ctrl_c_saves_and_resuming_ends_exactly_like_an_uninterrupted_run(tmp_path, corpus):
    config = Config().override([*TINY_LM, f"lm.text={corpus}", "lm.variational_dropout=0.2"])
    full = run_task(config, tmp_path / "full", log=quiet)

    def ctrl_c(step):
        if step == 4:
            os.kill(os.getpid(), signal.SIGINT)

    cut = run_task(config, tmp_path / "cut", on_step=ctrl_c, log=quiet)
    assert cut.status == "interrupted" and cut.summary is None
    saved = load_checkpoint(tmp_path / "cut")
    assert (saved["progress"].epoch, saved["progress"].step_in_epoch) == (1, 1)
    resumed = run_task(config, tmp_path / "cut", checkpoint=saved, log=quiet)
    assert resumed.status == "finished"
    final, reference = load_checkpoint(tmp_path / "cut"), load_checkpoint(tmp_path / "full")
    for name, value in reference["model"].items():
        assert torch.equal(final["model"][name], value), name
    assert resumed.summary["val_bpc"] == full.summary["val_bpc"]


@pytest.mark.parametrize("network", ["explicit", "tied"])
def test_explicit_baselines_train_and_sample(tmp_path, corpus, capsys, network):
    out = tmp_path / network
    code, stdout, err = run_cli(
        capsys,
        "train",
        "--out",
        out,
        "--text",
        corpus,
        *TINY_LM,
        f"lm.network={network}",
        "lm.layers=2",
        "optim.epochs=1",
    )
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["val_forward_nfe"] is None and summary["network"] == network
    code, stdout, err = run_cli(capsys, "sample", out, "--chars", "10", "--temperature", "0")
    assert code == 0 and len(stdout) == 1 + 10 + 1 and "NFE" not in err


def test_a_memory_of_past_equilibria_trains(tmp_path, corpus, capsys):
    out = tmp_path / "memory"
    code, stdout, err = run_cli(
        capsys, "train", "--out", out, "--text", corpus, *TINY_LM, "lm.memory=6", "optim.epochs=1"
    )
    assert code == 0, err
    assert json.loads((out / "summary.json").read_text())["val_bpc"] > 0


def test_bad_text_input_is_one_clear_line(tmp_path, corpus, capsys):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "bytes.txt").write_bytes(b"abc\xff\xfe")
    cases = [
        ("--text", tmp_path / "empty.txt", "is empty"),
        ("--text", tmp_path / "bytes.txt", "is not UTF-8 text: byte 3 (line 1)"),
        ("--text", tmp_path / "nope.txt", "no text file at"),
    ]
    for flag, value, message in cases:
        code, _, err = run_cli(capsys, "train", "--out", tmp_path / "x", flag, value, *TINY_LM)
        assert code == 2 and message in err and "Traceback" not in err, err
    code, _, err = run_cli(
        capsys, "train", "--out", tmp_path / "x", "--text", corpus, *TINY_LM, "lm.seq_len=5000"
    )
    assert code == 2 and "lm.seq_len=5000 is too long" in err
    code, _, err = run_cli(capsys, "train", *TINY_LM, "lm.width=12", "lm.heads=4")
    assert code == 2 and "into heads of even width" in err
    code, _, err = run_cli(capsys, "train", *TINY_LM, "lm.network=explicit", "lm.memory=4")
    assert code == 2 and "lm.memory=4 needs lm.network=deq" in err
    code, _, err = run_cli(capsys, "train", *TINY_LM, "optim.average=0.9")
    assert code == 2 and "not available for the lm task" in err


def test_sample_refuses_a_checkpoint_of_another_task(tmp_path, capsys):
    from tiny_runs import tiny

    out = tmp_path / "images"
    assert run_cli(capsys, "train", "--out", out, *tiny("optim.epochs=1"))[0] == 0
    code, _, err = run_cli(capsys, "sample", out)
    assert code == 2 and "sample needs a language model" in err


def test_generation_with_warm_starts_writes_what_cold_solves_write():
    torch.manual_seed(0)
    vocab = Vocabulary("abcdefg")
    model = DEQTransformer(7, 16, 2, tol=1e-9, max_iter=100, stop_mode="abs").double()
    warm = generate(model, vocab, "abc", 12, context=8, temperature=0.0)
    cold = generate(model, vocab, "abc", 12, context=8, temperature=0.0, warm_start=False)
    assert warm.text == cold.text and len(warm.text) == 12
    assert warm.mean_nfe < cold.mean_nfe  # the previous position's equilibrium is a head start
