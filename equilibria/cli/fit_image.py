"""`equilibria fit-image [IMAGE]`: fit an implicit neural representation (a DEQ) to one image.

Writes the reconstruction, an error map and a PSNR curve as PNGs, `summary.json` and a
checkpoint into --out. Ctrl-C stops after the current step, still writes them, and exits 130.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

from ..backward import BACKWARDS
from ..extras import require
from ..inr.fit import ImageFit, fit
from ..inr.image import SAMPLE_IMAGES, load_image, square
from ..inr.outputs import CHECKPOINT, write_outputs
from ..inr.settings import FitSettings
from ..solvers import SOLVERS
from ..training.checkpoint import CheckpointError
from ..training.distributed import resolve_device
from ..training.interrupt import StopRequest
from ..training.summary import machine
from .arguments import number

FIT_PACKAGES = {"tqdm": "progress bars", "matplotlib": "plots", "PIL": "PNG files (Pillow)"}


def add_parser(commands: argparse._SubParsersAction) -> None:
    defaults = FitSettings()
    parser = commands.add_parser(
        "fit-image",
        help="fit an implicit neural representation (a DEQ) to an image",
        description=(
            "Fit a coordinate network whose hidden state is a fixed point (DEQ INR) to one "
            "image, full-batch over every pixel, each step starting from the previous step's "
            "fixed points. IMAGE is a PNG or JPEG file or a sample image ("
            f"{', '.join(SAMPLE_IMAGES)}; default china, the photo scikit-learn bundles; "
            "camera needs scikit-image)."
        ),
    )
    parser.add_argument("image", nargs="?", help="image file or sample name (default: china)")
    parser.add_argument(
        "--size", type=number(int, 2, False), default=defaults.size, help="square side (256)"
    )
    parser.add_argument(
        "--resize", action="store_true", help="scale the central square instead of cropping"
    )
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument(
        "--steps", type=number(int, 1, False), default=defaults.steps, help="training steps"
    )
    budget.add_argument(
        "--seconds", type=number(float, 0, True), help="train for this many seconds instead"
    )
    parser.add_argument("--lr", type=number(float, 0, True), default=defaults.lr)
    parser.add_argument("--width", type=number(int, 1, False), default=defaults.width)
    parser.add_argument("--frequencies", type=number(int, 1, False), default=defaults.frequencies)
    parser.add_argument(
        "--scale", type=number(float, 0, True), default=defaults.scale, help="frequency spread"
    )
    parser.add_argument(
        "--explicit",
        action="store_true",
        help="fit the explicit baseline (a Fourier-feature sine MLP of equal parameter count)",
    )
    parser.add_argument(
        "--depth", type=number(int, 1, False), default=defaults.depth, help="explicit layers"
    )
    parser.add_argument(
        "--no-reuse", action="store_true", help="solve every step from zeros (for comparison)"
    )
    parser.add_argument("--solver", choices=list(SOLVERS), default=defaults.solver)
    parser.add_argument("--backward", choices=list(BACKWARDS), default=defaults.backward)
    parser.add_argument("--tol", type=number(float, 0, True), default=defaults.tol)
    parser.add_argument("--max-iter", type=number(int, 1, False), default=defaults.max_iter)
    parser.add_argument("--seed", type=number(int, 0, False), default=defaults.seed)
    parser.add_argument("--out", type=Path, help="output folder (default: runs/fit-image-TIME)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=number(int, 1, False), help="CPU threads for torch")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def settings_of(args: argparse.Namespace) -> FitSettings:
    return FitSettings(
        size=args.size,
        resize=args.resize,
        steps=args.steps,
        seconds=args.seconds,
        lr=args.lr,
        width=args.width,
        frequencies=args.frequencies,
        scale=args.scale,
        explicit=args.explicit,
        depth=args.depth,
        reuse=not args.no_reuse,
        solver=args.solver,
        backward=args.backward,
        tol=args.tol,
        max_iter=args.max_iter,
        seed=args.seed,
    )


class FitProgress:
    """A tqdm bar over the steps (or seconds) of a fit showing PSNR and evaluations per step."""

    def __init__(self, settings: FitSettings, enabled: bool) -> None:
        self.bar: Any = None
        self.by_time = settings.seconds is not None
        if enabled:
            tqdm = require("tqdm", "progress bars").tqdm
            total = settings.seconds if self.by_time else settings.steps
            unit = "s" if self.by_time else "step"
            self.bar = tqdm(total=total, unit=unit, leave=False, dynamic_ncols=True, desc="fit")

    def __call__(self, record: dict[str, Any]) -> None:
        if self.bar is None:
            return
        postfix = {"psnr": f"{record['psnr']:.2f} dB"}
        if "forward_nfe" in record:
            postfix["nfe"] = f"{record['forward_nfe']}/{record['backward_nfe']}"
        self.bar.set_postfix(postfix, refresh=False)
        if self.by_time:  # the last step ends past the time budget: the bar stops at its total
            elapsed = min(record["seconds"], self.bar.total)
            self.bar.update(round(elapsed - self.bar.n, 2))
        else:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    out = args.out or Path("runs") / f"fit-image-{time.strftime('%Y%m%d-%H%M%S')}"
    if (out / CHECKPOINT).exists():
        raise CheckpointError(
            f"{out} already holds a fit ({out / CHECKPOINT}); choose another --out"
        )
    for module, purpose in FIT_PACKAGES.items():  # before any work, not when writing at the end
        require(module, f"equilibria fit-image ({purpose})")
    image = square(load_image(args.image), settings.size, resize=settings.resize)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    fitting = ImageFit(settings, image, device)
    height, width = image.size
    print(
        f"{settings.model_name} INR ({fitting.parameters:,} parameters) on {image.source} "
        f"({width}x{height}, {height * width:,} pixels per step), {device}; writing to {out}"
    )
    progress = FitProgress(settings, enabled=not args.no_progress)
    try:
        with StopRequest() as stop:
            result = fit(fitting, on_step=progress, stop=lambda: stop.requested)
    finally:
        progress.close()
    written = write_outputs(fitting, result, out, machine())
    nfe = ""
    if fitting.is_deq and result.history:
        forward = [row["forward_nfe"] for row in result.history]
        nfe = f", forward evaluations per step {sum(forward) / len(forward):.1f}"
    print(
        f"PSNR {result.psnr:.2f} dB after {result.steps} steps ({result.seconds:.1f} s{nfe}); "
        f"wrote {', '.join(p.name for p in written)} to {out}"
    )
    if result.status == "interrupted":
        print(
            f"stopped by {stop.signal_name or 'SIGINT'} after {result.steps} steps", file=sys.stderr
        )
        return 130
    return 0


__all__ = ["add_parser", "run"]
