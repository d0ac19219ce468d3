"""`equilibria train` run as a user runs it, in its own process: what the training parts measure."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from .meters import SavedTensorBytes, peak_tensor_bytes

# the optional modules `equilibria train` needs: parts that train name them in `requires`
TRAINING_MODULES = ("sklearn", "matplotlib", "tqdm")
# the training recipe before the one-step gradient and the Jacobian penalty became the defaults:
# parts measured with it pin it, so that a rerun trains what their tables describe
IMPLICIT_RECIPE = ("deq.backward=implicit", "deq.jacobian_gamma=0")
# image classifiers' training batch before their default became 64: the parts whose tables were
# measured with it pin it (the MNIST-t10k settings carry it in `datasets.MNIST_COMMON`)
PREVIOUS_IMAGE_BATCH = "data.batch_size=32"


def run_train(out: Path, overrides: list[str] | tuple[str, ...]) -> float:
    """`python -m equilibria train --out OUT overrides...`; its wall seconds (raises on failure)."""
    command = [sys.executable, "-m", "equilibria", "train", "--out", str(out), *overrides]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    return seconds


def run_cli(
    out: Path, overrides: list[str], threads: int | None = None
) -> tuple[dict[str, Any], float]:
    """A training run's summary (`summary.json`) and the wall seconds of the whole command."""
    if threads:
        overrides = [*overrides, f"run.threads={threads}"]
    seconds = run_train(out, overrides)
    return json.loads((out / "summary.json").read_text()), seconds


def train_model(out: Path, overrides: tuple[str, ...]) -> Path:
    """The checkpoint of a training run without its progress bars."""
    run_train(out, ("run.progress=false", *overrides))
    return out / "checkpoint.pt"


def step_memory(overrides: list[str], data_dir: Path) -> dict[str, Any]:
    """Activation bytes saved for backward and peak tensor bytes of one training step of the
    run `overrides` describe, at the batch that run trains with."""
    from equilibria.config import Config
    from equilibria.data import load_data
    from equilibria.models import build_model

    config = Config().override([*overrides, f"data.data_dir={data_dir}"]).for_task()
    batch = config.data.batch_size
    data = load_data(config.data.dataset, data_dir, download=False)
    torch.manual_seed(0)
    model = build_model(config, data.shape, data.classes)
    x = data.inputs(data.train.images[:batch])
    y = data.train.labels[:batch]

    def step() -> None:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    step()  # warm-up: gradients and allocator pools exist before measuring
    with SavedTensorBytes(exclude=list(model.parameters())) as saved:
        loss = F.cross_entropy(model(x), y)
    del loss
    peak = peak_tensor_bytes(step, torch.device("cpu"))
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "saved_mb": saved.bytes / 2**20,
        "peak_mb": None if peak is None else peak / 2**20,
    }


def epoch_records(out: Path) -> list[dict[str, Any]]:
    """The epoch records (`metrics.jsonl`) of the training run in `out`."""
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line]


def in_pairs(jobs: dict[Any, Callable[[], dict[str, Any]]]) -> dict[Any, dict[str, Any]]:
    """Run `jobs` two at a time (two cores, one thread each: every run shares the machine
    alike); their results by key."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {key: pool.submit(job) for key, job in jobs.items()}
        return {key: future.result() for key, future in futures.items()}


def mean_and_spread(values: list[float]) -> tuple[float, float]:
    """The mean of `values` and their sample standard deviation (0 for one value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)
