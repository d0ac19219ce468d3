"""What a fit writes: the reconstruction, an error map and a PSNR curve as PNGs, the summary and
a checkpoint (every file written atomically)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..extras import require
from ..files import atomic_write_bytes, pyplot, write_figure, write_json
from ..training.checkpoint import Progress, save_checkpoint
from .fit import FitResult, ImageFit

RECONSTRUCTION = "reconstruction.png"
ERROR_MAP = "error_map.png"
PSNR_CURVE = "psnr_curve.png"
SUMMARY = "summary.json"
CHECKPOINT = "checkpoint.pt"


def _pyplot() -> Any:
    return pyplot("the error map and PSNR curve of a fit")


def save_png(pixels: torch.Tensor, path: Path) -> None:
    """An (height, width, 3) image in [0, 1] as an 8-bit PNG."""
    pil = require("PIL.Image", "writing PNG images (Pillow)")
    array = (pixels.detach().cpu().clamp(0, 1).numpy() * 255.0 + 0.5).astype(np.uint8)
    buffer = io.BytesIO()
    pil.fromarray(array, mode="RGB").save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


def save_error_map(reconstruction: torch.Tensor, target: torch.Tensor, path: Path) -> None:
    """The absolute error per pixel (mean over channels), with a colour bar."""
    plt = _pyplot()
    error = (reconstruction.detach().cpu() - target.cpu()).abs().mean(dim=-1).numpy()
    figure, axis = plt.subplots(figsize=(5.2, 4.4))
    shown = axis.imshow(error, cmap="magma", vmin=0.0, vmax=max(float(error.max()), 1e-6))
    figure.colorbar(shown, ax=axis, label="|reconstruction - image| (mean over RGB)")
    axis.set_title("absolute error")
    axis.axis("off")
    figure.tight_layout()
    write_figure(figure, path)


def save_psnr_curve(history: Sequence[Mapping[str, Any]], path: Path, *, title: str) -> None:
    """Training PSNR against steps and, for the DEQ, forward evaluations per step."""
    plt = _pyplot()
    steps = [row["step"] for row in history]
    has_nfe = any("forward_nfe" in row for row in history)
    columns = 2 if has_nfe else 1
    figure, axes = plt.subplots(1, columns, figsize=(5.2 * columns, 3.8), squeeze=False)
    axes[0][0].plot(steps, [row["psnr"] for row in history])
    axes[0][0].set(xlabel="step", ylabel="training PSNR (dB)", title=title)
    if has_nfe:
        axes[0][1].plot(steps, [row["forward_nfe"] for row in history], label="forward")
        backward = [row["backward_nfe"] for row in history]
        if any(backward):  # a Jacobian-free backward makes no evaluations of its own
            axes[0][1].plot(steps, backward, label="backward")
        axes[0][1].set(xlabel="step", ylabel="cell evaluations", title="evaluations per step")
        axes[0][1].set_yscale("log")
        axes[0][1].legend()
    for axis in axes[0]:
        axis.grid(alpha=0.3)
    figure.tight_layout()
    write_figure(figure, path)


def summarize(fitting: ImageFit, result: FitResult, machine: dict[str, Any]) -> dict[str, Any]:
    """The numbers of a fit: what was fitted, how long, how well, and how many evaluations."""
    settings, history = fitting.settings, result.history
    summary: dict[str, Any] = {
        "status": result.status,
        "image": fitting.image.source,
        "size": list(fitting.image.size),
        "model": settings.model_name,
        "parameters": fitting.parameters,
        "steps": result.steps,
        "seconds": result.seconds,
        "psnr": result.psnr,
        "final_train_psnr": history[-1]["psnr"] if history else None,
        "settings": settings.to_dict(),
        "machine": machine,
    }
    if fitting.is_deq and history:
        forward = [row["forward_nfe"] for row in history]
        summary["mean_forward_nfe"] = sum(forward) / len(forward)
        summary["first_step_forward_nfe"] = forward[0]
        summary["mean_backward_nfe"] = sum(row["backward_nfe"] for row in history) / len(history)
        summary["final_solve_nfe"] = fitting.cold_and_warm_nfe()
    return summary


def write_outputs(
    fitting: ImageFit, result: FitResult, out: Path, machine: dict[str, Any]
) -> list[Path]:
    """Write the PNGs, `summary.json` and the checkpoint into `out`; returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    target = fitting.image.pixels
    save_png(result.reconstruction, out / RECONSTRUCTION)
    save_error_map(result.reconstruction, target, out / ERROR_MAP)
    save_psnr_curve(
        result.history, out / PSNR_CURVE, title=f"{fitting.settings.model_name} INR fit"
    )
    summary = summarize(fitting, result, machine)
    write_json(out / SUMMARY, summary)
    save_checkpoint(
        out / CHECKPOINT,
        config=fitting.settings.to_dict(),
        model=fitting.model.state_dict(),
        optimizer=fitting.optimizer.state_dict(),
        scheduler={},
        progress=Progress(
            global_step=result.steps,
            train_seconds=result.seconds,
            finished=result.status == "finished",
        ),
        history=result.history,
        meter={},
        image={"source": fitting.image.source, "size": list(fitting.image.size)},
    )
    return [out / name for name in (RECONSTRUCTION, ERROR_MAP, PSNR_CURVE, SUMMARY, CHECKPOINT)]
