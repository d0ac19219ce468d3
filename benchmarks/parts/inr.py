"""Implicit representation of a photo: the DEQ INR against an explicit network of equal size.

Three fits of the central crop of scikit-learn's `china.jpg`, each for the same budget of
training time: the DEQ with each pixel's fixed point reused as the next step's start, the same
DEQ solving every step from zeros, and the explicit Fourier-feature sine MLP with the DEQ's
parameter count. Reported: PSNR of the final reconstruction, steps taken, cell evaluations per
step (with and without reuse) and the peak tensor memory of one training step.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, replace
from typing import Any

from equilibria.inr import FitSettings, ImageFit, fit, load_image, square

from ..config import BenchConfig
from ..meters import peak_tensor_bytes
from ..plots import line_plot
from ..registry import register
from ..report import Check, Column, Figure, Section, Table

NFE_RATIO_TARGET = 3.0


@dataclass(frozen=True)
class Settings:
    size: int
    seconds: float  # training budget of each fit, on the report's clock
    width: int
    frequencies: int
    scale: float = 10.0
    lr: float = 1e-2

    @classmethod
    def for_config(cls, config: BenchConfig) -> Settings:
        if config.quick:
            return cls(size=64, seconds=5.0, width=64, frequencies=32)
        return cls(size=256, seconds=60.0, width=128, frequencies=64)

    def fit_settings(self, seed: int, **changes: Any) -> FitSettings:
        base = FitSettings(
            size=self.size,
            seconds=self.seconds,
            width=self.width,
            frequencies=self.frequencies,
            scale=self.scale,
            lr=self.lr,
            seed=seed,
        )
        return replace(base, **changes)


EXPLICIT_LR = 3e-3  # the explicit network also runs at this rate, in case it suits it better

RUNS = {
    "DEQ, fixed points reused": {},
    "DEQ, every solve from zeros": {"reuse": False},
    "explicit sine MLP (3 layers)": {"explicit": True},
    f"explicit sine MLP (3 layers), lr {EXPLICIT_LR:g}": {"explicit": True, "lr": EXPLICIT_LR},
}


def cell_evaluations(record: dict[str, Any]) -> int:
    """Cell applications of one DEQ step: the solve, the differentiable f(z*), the adjoint."""
    return record["forward_nfe"] + 1 + record["backward_nfe"]


def measure(name: str, settings: FitSettings, image: Any, config: BenchConfig) -> dict[str, Any]:
    fitting = ImageFit(settings, image, config.torch_device)
    result = fit(fitting, clock=config.clock)
    row: dict[str, Any] = {
        "model": name,
        "parameters": fitting.parameters,
        "steps": result.steps,
        "seconds": result.seconds,
        "step_seconds": result.seconds / max(result.steps, 1),
        "psnr": result.psnr,
        "history": result.history,
    }
    if fitting.is_deq:
        later = result.history[1:] or result.history  # the first step is cold in both runs
        row["forward_nfe"] = statistics.mean(r["forward_nfe"] for r in later)
        row["cells"] = statistics.mean(cell_evaluations(r) for r in later)
        row["first_nfe"] = result.history[0]["forward_nfe"]
    peak = peak_tensor_bytes(lambda: fitting.step(1.0), config.torch_device)
    row["memory_mib"] = None if peak is None else peak / 2**20
    return row


def run_inr(config: BenchConfig, settings: Settings | None = None) -> Section:
    s = settings or Settings.for_config(config)
    image = square(load_image(), s.size)
    section = Section(
        "inr",
        "Implicit representation of a photo: DEQ INR against an explicit network",
        summary=(
            f"A {s.size}x{s.size} central crop of scikit-learn's china.jpg, fitted full-batch "
            f"(all {s.size * s.size:,} pixels every step) for {s.seconds:g} s of "
            f"{config.clock_name} time per model. PSNR is that of the final reconstruction; "
            "cell evaluations per step count the forward solve, the one differentiable cell "
            "application and the backward's (the first, cold step left out)."
        ),
        settings={
            "width": str(s.width),
            "Fourier frequencies": f"{s.frequencies} (scale {s.scale:g})",
            "optimizer": f"Adam, lr {s.lr:g} (unless stated) cosine-decayed to 10% over the budget",
            "DEQ": (
                "picard, rel tol 1e-2 in training (1e-3 for the reconstruction), max_iter 40, "
                "contraction 0.9, Jacobian-free backward"
            ),
            "clock": config.clock_name,
        },
    )
    rows = [
        measure(name, s.fit_settings(config.seed, **changes), image, config)
        for name, changes in RUNS.items()
    ]
    table = Table(
        "PSNR after an equal training time, steps, evaluations and memory",
        [
            Column("model", "model"),
            Column("parameters", "parameters", ","),
            Column("steps", "steps"),
            Column("step_seconds", f"{config.clock_name} s / step", ".3f"),
            Column("psnr", "PSNR (dB)", ".2f"),
            Column("forward_nfe", "solve NFE / step", ".2f"),
            Column("cells", "cell evaluations / step", ".2f"),
            Column("first_nfe", "first-step NFE"),
            Column("memory_mib", "peak step memory (MiB)", ".1f"),
        ],
    )
    for row in rows:
        table.add(**{k: v for k, v in row.items() if k not in ("history", "seconds")})
    section.tables.append(table)
    reused, cold = rows[:2]
    explicit = max(rows[2:], key=lambda row: row["psnr"])  # the better learning rate
    ratio = cold["forward_nfe"] / reused["forward_nfe"]
    section.checks.append(
        Check(
            f"at least {NFE_RATIO_TARGET:g}x fewer solver evaluations per step with reuse",
            f"{cold['forward_nfe']:.2f} / {reused['forward_nfe']:.2f} = {ratio:.2f}x (all cell "
            f"evaluations of a step: {cold['cells'] / reused['cells']:.2f}x)",
            ratio >= NFE_RATIO_TARGET,
        )
    )
    section.checks.append(
        Check(
            "DEQ PSNR >= explicit PSNR (its better learning rate) at equal parameters and time",
            f"{reused['psnr']:.2f} dB vs {explicit['psnr']:.2f} dB "
            f"({reused['parameters']:,} vs {explicit['parameters']:,} parameters)",
            reused["psnr"] >= explicit["psnr"],
        )
    )
    path = config.out / "inr_psnr.png"
    line_plot(
        path,
        [
            (
                "training PSNR",
                "PSNR (dB)",
                {r["model"]: _curve(r["history"], "psnr") for r in rows},
            ),
            (
                "forward solve NFE per step",
                "evaluations",
                {r["model"]: _curve(r["history"], "forward_nfe") for r in rows[:2]},
            ),
        ],
        xlabel=f"training time ({config.clock_name} s)",
    )
    section.figures.append(Figure(path.name, "INR fits: PSNR and solve NFE against time"))
    section.notes.append(
        f"Reuse cuts the forward solve from {cold['forward_nfe']:.1f} to "
        f"{reused['forward_nfe']:.1f} evaluations per step, so the DEQ takes "
        f"{reused['steps']} steps instead of {cold['steps']} in the same time; the explicit "
        f"network (at its better learning rate) takes {explicit['steps']}."
    )
    steps = min(reused["steps"], explicit["steps"])
    section.notes.append(
        f"Training PSNR after {steps} steps (per step rather than per second): DEQ "
        f"{reused['history'][steps - 1]['psnr']:.2f} dB, explicit "
        f"{explicit['history'][steps - 1]['psnr']:.2f} dB."
    )
    return section


def _curve(history: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    every = max(1, len(history) // 60)  # at most about 60 markers per line
    picked = history[::every]
    return [r["seconds"] for r in picked], [r[key] for r in picked]


@register(
    "inr",
    "Implicit representation: DEQ INR against an explicit network",
    order=300,
    requires=("sklearn", "matplotlib", "PIL"),
)
def run(config: BenchConfig) -> Section:
    return run_inr(config)
