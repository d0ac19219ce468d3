"""The settings of one image fit, checked on construction."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..backward import BACKWARDS
from ..errors import check_choice, check_fraction, check_nonnegative, check_positive_int
from ..solvers import SOLVERS


@dataclass(frozen=True)
class FitSettings:
    """What `fit_image` does.

    Attributes:
        size: side of the square the image is cropped (or, with `resize`, scaled) to.
        steps: training steps (full-batch: every pixel in every step), unless `seconds` is set.
        seconds: train until this much time has passed instead (on the fit's clock).
        lr: Adam learning rate, cosine-decayed to 10% of it over the steps (or the seconds).
        width, frequencies, scale: hidden width, Fourier frequencies and their spread.
        explicit: fit the explicit `FourierMLP` baseline of `depth` layers, sized to the DEQ's
            parameter count, instead of the `DEQINR`.
        reuse: start each step's solve from the previous step's fixed point.
        solver, tol, max_iter, backward, contraction: the DEQ's settings. The training
            tolerance is loose (each step moves the fixed point anyway, and the next step
            starts from it); the final reconstruction is solved to a tenth of it.
        seed: seed of the weights and Fourier frequencies.
    """

    size: int = 256
    resize: bool = False
    steps: int = 300
    seconds: float | None = None
    lr: float = 1e-2
    width: int = 128
    frequencies: int = 64
    scale: float = 10.0
    explicit: bool = False
    depth: int = 3
    reuse: bool = True
    solver: str = "picard"
    tol: float = 1e-2
    max_iter: int = 40
    backward: str = "onestep"
    contraction: float = 0.9
    seed: int = 0

    def __post_init__(self) -> None:
        check_positive_int("size", self.size, minimum=2)
        check_positive_int("steps", self.steps)
        if self.seconds is not None and check_nonnegative("seconds", self.seconds) == 0:
            raise ValueError("seconds must be > 0 (the time budget of the fit)")
        if check_nonnegative("lr", self.lr) == 0:
            raise ValueError("lr must be > 0")
        check_positive_int("width", self.width)
        check_positive_int("frequencies", self.frequencies)
        if check_nonnegative("scale", self.scale) == 0:
            raise ValueError("scale must be > 0")
        check_positive_int("depth", self.depth)
        check_choice("solver", self.solver, SOLVERS)
        if check_nonnegative("tol", self.tol) == 0:
            raise ValueError("tol must be > 0")
        check_positive_int("max_iter", self.max_iter)
        check_choice("backward", self.backward, BACKWARDS)
        if check_fraction("contraction", self.contraction) >= 1:
            raise ValueError(f"contraction must be < 1, got {self.contraction}")
        check_positive_int("seed", self.seed, minimum=0)

    @property
    def model_name(self) -> str:
        return "explicit" if self.explicit else "deq"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
