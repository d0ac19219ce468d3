"""Fitting an implicit representation to one image: full-batch steps over every pixel.

For the DEQ, the fixed point of every pixel is kept after each step and is the next step's
starting point (`reuse`): the weights move little in one step, so the old fixed point is nearly
the new one and most solves stop after one or two cell evaluations.

The states of all pixels are kept as one tensor rather than in `eq.FixedPointCache`: that cache
is keyed per sample for data sets visited in shuffled batches, and storing tens of thousands of
rows one by one every step would cost more than the solve it saves. Here the batch is always
the whole pixel grid in the same order, so one tensor is the exact equivalent.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..models.inr import DEQINR, FourierMLP, count_parameters
from .image import Image, pixel_grid, psnr, psnr_of_mse
from .settings import FitSettings

Clock = Callable[[], float]


def build_inr(settings: FitSettings) -> nn.Module:
    """The `DEQINR` the settings describe, or the explicit `FourierMLP` of equal size."""
    deq = DEQINR(
        settings.width,
        settings.frequencies,
        scale=settings.scale,
        contraction=settings.contraction,
        solver=settings.solver,
        tol=settings.tol,
        max_iter=settings.max_iter,
        backward=settings.backward,
        seed=settings.seed,
    )
    if not settings.explicit:
        return deq
    return FourierMLP.matching(
        count_parameters(deq),
        settings.frequencies,
        depth=settings.depth,
        scale=settings.scale,
        seed=settings.seed,
    )


def lr_factor(progress: float) -> float:
    """Cosine decay from 1 to 0.1 as `progress` goes from 0 to 1."""
    progress = min(max(progress, 0.0), 1.0)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class FitResult:
    """How a fit ended: "finished" or "interrupted", the history and the final reconstruction."""

    status: str
    steps: int
    seconds: float
    history: list[dict[str, Any]]
    reconstruction: torch.Tensor  # (height, width, 3) in [0, 1]
    psnr: float
    extras: dict[str, Any] = field(default_factory=dict)


class ImageFit:
    """The state of a fit: model, optimizer, pixel coordinates, target and the kept fixed point.

    Args:
        settings: what to fit and how.
        image: the (already cropped) image.
        device: where to run.
    """

    def __init__(self, settings: FitSettings, image: Image, device: torch.device | str = "cpu"):
        self.settings = settings
        self.image = image
        self.device = torch.device(device)
        torch.manual_seed(settings.seed)
        self.model = build_inr(settings).to(self.device)
        height, width = image.size
        self.coords = pixel_grid(height, width).to(self.device)
        self.target = image.pixels.reshape(-1, 3).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=settings.lr)
        self.state: torch.Tensor | None = None  # each pixel's last fixed point (DEQ only)
        self.steps = 0
        self.history: list[dict[str, Any]] = []

    @property
    def is_deq(self) -> bool:
        return isinstance(self.model, DEQINR)

    @property
    def parameters(self) -> int:
        return count_parameters(self.model)

    def step(self, progress: float = 0.0) -> dict[str, Any]:
        """One full-batch Adam step at the learning rate for `progress` (0 to 1) of the fit.

        Returns the step's record: loss and PSNR of the prediction before the update, and for
        the DEQ the forward and backward evaluations and the largest relative residual.
        """
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = self.settings.lr * lr_factor(progress)
        record: dict[str, Any] = {"step": self.steps + 1}
        if self.is_deq:
            start = self.state if self.settings.reuse else None
            z = self.model.equilibrium(self.coords, z0=start)
            prediction = self.model.decode(z)
            self.state = z.detach()
        else:
            prediction = self.model(self.coords)
        loss = (prediction - self.target).pow(2).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.steps += 1
        record["loss"] = float(loss.detach())
        record["psnr"] = psnr_of_mse(record["loss"])
        if self.is_deq:
            stats = self.model.stats
            record["forward_nfe"] = stats.forward_nfe
            record["backward_nfe"] = stats.backward_nfe or 0
            record["residual"] = float(stats.rel_residual.max())
        return record

    @torch.no_grad()
    def reconstruct(self) -> torch.Tensor:
        """The image the current weights represent, (height, width, 3) clipped to [0, 1].

        The DEQ starts from the kept fixed points and solves to a tenth of the training tolerance.
        """
        self.model.eval()
        if self.is_deq:
            s = self.settings
            out = self.model(self.coords, z0=self.state, tol=s.tol / 10, max_iter=4 * s.max_iter)
        else:
            out = self.model(self.coords)
        height, width = self.image.size
        return out.clamp(0.0, 1.0).reshape(height, width, 3)

    def cold_and_warm_nfe(self) -> dict[str, int]:
        """Forward evaluations of one solve from zeros and one from the kept fixed points, with
        the current weights and the training settings (DEQ only)."""
        counts = {}
        with torch.no_grad():
            self.model.train()
            for name, start in (("cold", None), ("warm", self.state)):
                self.model.equilibrium(self.coords, z0=start)
                counts[name] = self.model.stats.forward_nfe
        return counts


def fit(
    fitting: ImageFit,
    *,
    clock: Clock = time.perf_counter,
    on_step: Callable[[dict[str, Any]], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> FitResult:
    """Train `fitting` for its settings' steps (or seconds on `clock`) and reconstruct the image.

    `on_step(record)` is called after each step; `stop()` is asked after each step whether to
    end early (the result's status is then "interrupted").
    """
    settings = fitting.settings
    elapsed = 0.0
    status = "finished"
    while True:
        if settings.seconds is None:
            if fitting.steps >= settings.steps:
                break
            progress = fitting.steps / settings.steps
        else:
            if elapsed >= settings.seconds:
                break
            progress = elapsed / settings.seconds
        started = clock()
        record = fitting.step(progress)
        elapsed += clock() - started
        record["seconds"] = elapsed
        fitting.history.append(record)
        if on_step is not None:
            on_step(record)
        if stop is not None and stop():
            status = "interrupted"
            break
    image = fitting.reconstruct()
    return FitResult(
        status=status,
        steps=fitting.steps,
        seconds=elapsed,
        history=fitting.history,
        reconstruction=image,
        psnr=psnr(image, fitting.image.pixels.to(image.device)),
    )
