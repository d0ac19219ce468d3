"""`equilibria train --task ssl`: contrastive pre-training of a backbone, then its linear probe.

The backbone ([model]: the MDEQ trunk, or the explicit ResNet trunk with model.arch=resnet) and
a projection head are trained with the NT-Xent loss on two random views of each training image
([ssl]); labels are used only by the linear probe on the frozen features at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..config import Config, ConfigError
from ..data import ImageData, load_data
from ..training.checkpoint import CheckpointError
from ..training.distributed import Runtime
from ..training.equilibrium import equilibrium_summary
from ..training.loop import StepHook
from ..training.metrics import write_json, write_jsonl
from ..training.report import SUMMARY, machine
from ..training.run import RunResult, check_new_run, trained_in, write_run_config
from .backbone import count_parameters
from .model import ContrastiveModel, build_contrastive_model
from .plots import plot_contrastive_curves
from .trainer import ContrastiveTrainer


def train(
    config: Config,
    out: Path,
    runtime: Runtime | None = None,
    *,
    checkpoint: dict | None = None,
    on_step: StepHook | None = None,
    log: Callable[[str], None] = print,
) -> RunResult:
    """Pre-train the backbone `config` describes and probe it, writing everything into `out`.

    With `checkpoint` (the contents of `load_checkpoint`), continue that run where it stopped.
    Writes `config.json`, `metrics.jsonl`, `checkpoint.pt`, `curves.png` and `summary.json`.
    """
    started = time.perf_counter()
    runtime = runtime or Runtime()
    if runtime.distributed:
        raise ConfigError(
            "run.task=ssl runs in one process (the contrastive loss compares every pair in the "
            "batch); start it without torchrun"
        )
    out = Path(out)
    check_new_run(out, checkpoint)
    if checkpoint is not None and checkpoint.get("task") != "ssl":
        raise CheckpointError(
            "the checkpoint to resume is not from a contrastive (run.task=ssl) run"
        )
    data = load_data(config.data.dataset, config.data.data_dir, download=config.data.download)
    data = data.with_train_samples(config.data.train_samples)
    torch.manual_seed(config.run.seed)
    model = build_contrastive_model(config, data.shape[0])
    write_run_config(config, out, runtime)
    trainer = ContrastiveTrainer(
        config, data, model, runtime, out, checkpoint=checkpoint, on_step=on_step, log=log
    )
    log(
        f"contrastive {config.model.arch} backbone ({count_parameters(model.backbone):,} "
        f"parameters, projection head {count_parameters(model.projector):,}) on {data.name} "
        f"({len(data.train)} train / {len(data.test)} test images), {runtime.device}; "
        f"writing to {out}"
    )
    outcome = trainer.run()
    result = RunResult(outcome.status, out, trainer.checkpoint_path, signal=outcome.signal)
    if outcome.status == "interrupted":
        return result
    result.summary = finalize(config, data, model, trainer, out)
    result.total_seconds = time.perf_counter() - started
    s = result.summary
    floor = (
        f" (random-init backbone {100 * s['init_probe_test_accuracy']:.2f}%)"
        if s["init_probe_test_accuracy"] is not None
        else ""
    )
    nfe = (
        f", train NFE view 1/2 {s['train_first_forward_nfe']:.1f}/"
        f"{s['train_second_forward_nfe']:.1f}"
        if s["train_first_forward_nfe"] is not None
        else ""
    )
    result.headline = (
        f"linear-probe test accuracy {100 * s['probe_test_accuracy']:.2f}%{floor}{nfe}, "
        f"{trained_in(s['train_seconds'], result.total_seconds)}"
    )
    return result


def finalize(
    config: Config,
    data: ImageData,
    model: ContrastiveModel,
    trainer: ContrastiveTrainer,
    out: Path,
) -> dict[str, Any]:
    """Probe the trained backbone, plot, and write `summary.json`."""
    state = trainer.state
    probe = trainer.probe()
    history = state.history
    history[-1]["probe_test_accuracy"] = probe["test_accuracy"]
    history[-1]["probe_test_residual"] = probe["test_residual"]
    history[-1]["probe_test_converged"] = probe["test_converged"]
    init = state.init_probe
    summary = {
        "probe_test_accuracy": probe["test_accuracy"],
        "probe_train_accuracy": probe["train_accuracy"],
        "init_probe_test_accuracy": None if init is None else init["test_accuracy"],
        "feature_dim": probe["feature_dim"],
        "probe_forward_nfe": probe["forward_nfe"],
        "probe_test_residual": probe["test_residual"],
        "probe_test_converged": probe["test_converged"],
        "equilibrium": equilibrium_summary(history, "probe_test", config.deq.residual_warning),
        "final_train_loss": history[-1]["train_loss"],
        "final_contrastive_accuracy": history[-1]["train_contrastive_accuracy"],
        "train_first_forward_nfe": _mean(history, "first_forward_nfe"),
        "train_second_forward_nfe": _mean(history, "second_forward_nfe"),
        "train_first_residual": _mean(history, "first_residual"),
        "train_second_residual": _mean(history, "second_residual"),
        "train_backward_nfe": _mean(history, "train_backward_nfe"),
        "reuse": config.ssl.reuse and model.is_equilibrium,
        "train_seconds": state.progress.train_seconds,
        "epochs": history[-1]["epoch"],
        "steps": history[-1]["step"],
        "batch_size": config.data.batch_size,
        "backbone": config.model.arch,
        "backbone_parameters": count_parameters(model.backbone),
        "projector_parameters": count_parameters(model.projector),
        "dataset": data.name,
        "data": data.description,
        "train_samples": len(data.train),
        "test_samples": len(data.test),
        "device": str(trainer.runtime.device),
        "machine": machine(),
    }
    write_jsonl(out / "metrics.jsonl", history)
    plot_contrastive_curves(
        history, out / "curves.png", init_probe=summary["init_probe_test_accuracy"]
    )
    write_json(out / SUMMARY, summary)
    return summary


def _mean(history: list[dict[str, Any]], key: str) -> float | None:
    values = [row[key] for row in history if row.get(key) is not None]
    return sum(values) / len(values) if values else None
