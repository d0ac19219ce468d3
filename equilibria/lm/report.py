"""After language-model training: a sample of text, the curves plot and `summary.json`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ..config import Config
from ..data.text import TextData
from ..files import atomic_write_bytes, write_json
from ..training.equilibrium import equilibrium_summary, plot_residuals
from ..training.metrics import history_mean
from ..training.plots import plot_nfe, pyplot, save_figure
from ..training.summary import SUMMARY, machine
from .generate import generate
from .model import context_length

SAMPLE = "sample.txt"
SAMPLE_CHARS = 300


def plot_curves(
    history: list[dict[str, Any]],
    path: Path,
    *,
    tol: float | None = None,
    threshold: float | None = None,
) -> None:
    """Bits per character (train and validation) and, for a DEQ, forward / backward NFE and the
    mean residual of the training and validation solves."""
    plt = pyplot()
    epochs = [row["epoch"] for row in history]
    has_nfe = any(row.get("train_forward_nfe") is not None for row in history)
    columns = 3 if has_nfe else 1
    figure, axes = plt.subplots(1, columns, figsize=(4.4 * columns, 3.4))
    axes = list(axes) if has_nfe else [axes]
    axes[0].plot(epochs, [r["train_bpc"] for r in history], label="train")
    axes[0].plot(epochs, [r["val_bpc"] for r in history], label="validation")
    axes[0].set(xlabel="epoch", ylabel="bits per character", title="loss")
    if has_nfe:
        plot_nfe(axes[1], history, "val", "validation")
        plot_residuals(axes[2], history, "val", "validation", tol=tol, threshold=threshold)
    save_figure(plt, figure, axes, path)


def finalize(
    config: Config,
    data: TextData,
    model: nn.Module,
    out: Path,
    history: list[dict[str, Any]],
    *,
    train_seconds: float,
    tokens_per_second: float | None,
) -> dict[str, Any]:
    """Write a text sample, the curves and the summary; return the summary."""
    final = history[-1]
    prompt = data.vocab.decode(data.val[: min(32, len(data.val))])
    sample = generate(
        model, data.vocab, prompt, SAMPLE_CHARS, context=context_length(config), temperature=0.8
    )
    atomic_write_bytes(out / SAMPLE, (prompt + sample.text).encode("utf-8"))
    summary = {
        "val_bpc": final["val_bpc"],
        "val_loss": final["val_loss"],
        "val_accuracy": final["val_accuracy"],
        "val_characters": final["val_characters"],
        "val_forward_nfe": final.get("val_forward_nfe"),
        "val_residual": final.get("val_residual"),
        "val_converged": final.get("val_converged"),
        "equilibrium": equilibrium_summary(history, "val", config.deq.residual_warning),
        "train_bpc": final["train_bpc"],
        "train_mean_forward_nfe": history_mean(history, "train_forward_nfe"),
        "train_mean_backward_nfe": history_mean(history, "train_backward_nfe"),
        "sample_mean_nfe": sample.mean_nfe,
        "tokens_per_second": tokens_per_second,
        "train_seconds": train_seconds,
        "epochs": final["epoch"],
        "steps": final["step"],
        "parameters": sum(p.numel() for p in model.parameters()),
        "network": config.lm.network,
        "text": data.description,
        "vocabulary": len(data.vocab),
        "machine": machine(),
    }
    plot_curves(
        history, out / "curves.png", tol=config.deq.tol, threshold=config.deq.residual_warning
    )
    write_json(out / SUMMARY, summary)
    return summary
