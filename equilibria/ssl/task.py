"""Contrastive pre-training as a task (`run.task=ssl`): a backbone, then its linear probe.

The backbone ([model]: the MDEQ trunk, or the explicit ResNet trunk with model.arch=resnet) and
a projection head are trained with the NT-Xent loss on two random views of each training image
([ssl]); labels are used only by the linear probe on the frozen features at the end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..classify.setup import recorded_images
from ..config import Config, ConfigError
from ..data import ImageData, load_data
from ..files import write_json, write_jsonl
from ..tasks import Task
from ..training.checkpoint import CheckpointError, restore_model
from ..training.distributed import Runtime
from ..training.equilibrium import equilibrium_summary
from ..training.metrics import history_mean
from ..training.summary import SUMMARY, machine
from .backbone import count_parameters
from .model import ContrastiveModel, build_contrastive_model
from .plots import plot_contrastive_curves
from .trainer import ContrastiveTrainer


def check(config: Config, runtime: Runtime, checkpoint: dict | None) -> None:
    """One process, and a checkpoint to resume only from a contrastive run."""
    if runtime.distributed:
        raise ConfigError(
            "run.task=ssl runs in one process (the contrastive loss compares every pair in the "
            "batch); start it without torchrun"
        )
    if checkpoint is not None and checkpoint.get("task") != "ssl":
        raise CheckpointError(
            "the checkpoint to resume is not from a contrastive (run.task=ssl) run"
        )


def training_images(config: Config) -> ImageData:
    """The data set [data] names (its labels serve the probe only)."""
    data = load_data(config.data.dataset, config.data.data_dir, download=config.data.download)
    return data.with_train_samples(config.data.train_samples)


def contrastive_model(config: Config, data: ImageData) -> ContrastiveModel:
    return build_contrastive_model(config, data.shape[0])


def trained_contrastive_model(config: Config, checkpoint: dict) -> ContrastiveModel:
    """The backbone and projection head of a saved run, in eval mode on the CPU."""
    model = contrastive_model(config, recorded_images(config, checkpoint))
    restore_model(model, checkpoint["model"], "the checkpoint")
    return model.eval()


def announce(config: Config, data: ImageData, trainer: ContrastiveTrainer, out: Path) -> str:
    model = trainer.model
    return (
        f"contrastive {config.model.arch} backbone ({count_parameters(model.backbone):,} "
        f"parameters, projection head {count_parameters(model.projector):,}) on {data.name} "
        f"({len(data.train)} train / {len(data.test)} test images), {trainer.runtime.device}; "
        f"writing to {out}"
    )


def headline(summary: dict[str, Any]) -> str:
    s = summary
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
    return f"linear-probe test accuracy {100 * s['probe_test_accuracy']:.2f}%{floor}{nfe}"


def finalize(
    config: Config, data: ImageData, trainer: ContrastiveTrainer, out: Path
) -> dict[str, Any]:
    """Probe the trained backbone, plot, and write `summary.json`."""
    state, model = trainer.state, trainer.model
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
        "train_first_forward_nfe": history_mean(history, "first_forward_nfe"),
        "train_second_forward_nfe": history_mean(history, "second_forward_nfe"),
        "train_first_residual": history_mean(history, "first_residual"),
        "train_second_residual": history_mean(history, "second_residual"),
        "train_backward_nfe": history_mean(history, "train_backward_nfe"),
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
        history,
        out / "curves.png",
        init_probe=summary["init_probe_test_accuracy"],
        tol=config.deq.tol,
        threshold=config.deq.residual_warning,
    )
    write_json(out / SUMMARY, summary)
    return summary


TASK = Task(
    name="ssl",
    noun="a contrastive backbone",
    section="ssl",
    load_data=training_images,
    build_model=contrastive_model,
    trainer=ContrastiveTrainer,
    announce=announce,
    finalize=finalize,
    headline=headline,
    check=check,
    load_model=trained_contrastive_model,
    model_data=recorded_images,
)
