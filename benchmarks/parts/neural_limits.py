"""How far a learned solver could go on a trained MDEQ: the bounds behind the neural part.

The neural part finds that a learned solver gains a constant few evaluations from its initial
guess and nothing from its learned update. This part asks whether a better learned solver could
do more, on held-out test images of the frozen model:

1. Initializer capacity: initializers of growing size fitted to the fixed points; their
   held-out relative distance to z* and the Anderson NFE to a relative residual from their guess.
2. Update rules with knowledge no small network has: Newton steps z <- z + P (f(z) - z) with
   P = (I - J)^-1 for each input's exact Jacobian J at its own fixed point (an oracle), and with
   the mean Jacobian of the other inputs (the best input-independent preconditioner of that
   form); plain and inside Anderson, from zero and from the learned initial guess.

    python -m benchmarks neural-limits               # in the suite: trains the model first
    python -m benchmarks.parts.neural_limits --checkpoint RUN/checkpoint.pt [--samples 8]
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import equilibria as eq
from equilibria.neural import NeuralSolver, SolverTraining
from equilibria.neural.training import fit_initializer, fixed_point_targets, relative_error
from equilibria.state import StateLayout

from ..config import BenchConfig
from ..frozen import Frozen, load_frozen
from ..registry import register
from ..report import Column, Section, Table
from ..residuals import best_residuals, evaluations_to
from ..train_runs import train_model
from .neural import Settings as ModelSettings

TITLE = "Learned solver: how far a better one could go on the MDEQ (digits)"


@dataclass(frozen=True)
class Settings:
    """What the part measures.

    Attributes:
        model: the trained model, the neural part's settings (its training run and recipe).
        samples: held-out images whose dense Jacobians the update rules use.
        widths: hidden widths of the initializers fitted.
        target: the relative residual the NFE are counted to.
    """

    model: ModelSettings = field(default_factory=ModelSettings)
    samples: int = 8
    widths: tuple[int, ...] = (0, 8, 16, 32)
    target: float = 1e-3

    @classmethod
    def quick(cls) -> Settings:
        return cls(model=ModelSettings.quick(), samples=2, widths=(0, 8), target=1e-2)


def initializer_capacity(
    frozen: Frozen, widths: tuple[int, ...], training: SolverTraining, target: float, cap: int
) -> list[dict[str, Any]]:
    """Per hidden width: parameters, held-out distance to z*, and Anderson NFE from the guess."""
    train_targets = [fixed_point_targets(frozen.deq, x, training) for x in frozen.train_inputs]
    test_targets = [fixed_point_targets(frozen.deq, x, training) for x in frozen.test_inputs]
    rows = []
    for width in widths:
        torch.manual_seed(0)
        x0 = frozen.train_inputs[0]
        solver = NeuralSolver.for_model(x0, frozen.deq.initial_state(x0), init_width=width)
        fit_initializer(solver, frozen.train_inputs, train_targets, training)
        with torch.no_grad():
            errors, curves = [], []
            for x, t in zip(frozen.test_inputs, test_targets, strict=True):
                z0 = solver.initial_state(x)
                errors.append(relative_error(StateLayout.of(z0).flatten(z0), t))
                curves.append(best_residuals(frozen.deq, x, z0, "anderson", cap))
        parameters = sum(p.numel() for p in solver.initializer.parameters())
        rows.append(
            {
                "width": width,
                "parameters": parameters,
                "share": parameters / frozen.parameters,
                "distance": float(torch.cat(errors).mean()),
                "nfe": float(evaluations_to(torch.cat(curves, dim=1), target).median()),
            }
        )
    zero_curves = [
        best_residuals(frozen.deq, x, frozen.deq.initial_state(x), "anderson", cap)
        for x in frozen.test_inputs
    ]
    rows.insert(
        0,
        {
            "width": None,
            "parameters": 0,
            "share": 0.0,
            "distance": 1.0,
            "nfe": float(evaluations_to(torch.cat(zero_curves, dim=1), target).median()),
        },
    )
    return rows


def jacobians(frozen: Frozen, x: torch.Tensor, z_star: torch.Tensor) -> torch.Tensor:
    """(n, d, d): the Jacobian of the cell at each sample's own fixed point (flat states)."""
    rows = []
    for i in range(len(x)):
        x_i = x[i : i + 1]
        layout = StateLayout.of(frozen.deq.initial_state(x_i))

        def cell(z: torch.Tensor, x_i=x_i, layout=layout) -> torch.Tensor:
            return layout.flatten(frozen.deq.cell(layout.unflatten(z[None]), x_i))[0]

        rows.append(torch.autograd.functional.jacobian(cell, z_star[i]))
    return torch.stack(rows)


def preconditioned_nfe(
    frozen: Frozen,
    x: torch.Tensor,
    start: torch.Tensor,
    preconditioner: torch.Tensor | None,
    solver: str,
    target: float,
    cap: int,
) -> list[float]:
    """Per sample: evaluations of f until ||f(z) - z|| / ||f(z)|| <= target, solving the fixed
    point of z + P (f(z) - z) (P = I when None) with `solver` from the flat `start`."""
    layout = StateLayout.of(frozen.deq.initial_state(x))
    seen: list[torch.Tensor] = []

    def mapped(z: torch.Tensor) -> torch.Tensor:
        fz = layout.flatten(frozen.deq.cell(layout.unflatten(z), x))
        g = fz - z
        seen.append(g.norm(dim=1) / fz.norm(dim=1).clamp_min(1e-30))
        if preconditioner is None:
            return fz
        return z + torch.bmm(preconditioner, g.unsqueeze(2)).squeeze(2)

    with torch.no_grad():
        eq.solve(mapped, start, solver, tol=0.0, max_iter=cap, patience=None, on_failure="ignore")
    residuals = torch.stack(seen).cummin(dim=0).values
    return evaluations_to(residuals, target).tolist()


def update_bounds(
    frozen: Frozen, samples: int, training: SolverTraining, target: float, cap: int, log: Callable
) -> dict[str, Any]:
    """NFE to `target` for each update rule and start, over `samples` held-out images."""
    x = frozen.test_inputs[0][:samples]
    layout = StateLayout.of(frozen.deq.initial_state(x))
    z_star = fixed_point_targets(frozen.deq, x, training)
    log(f"dense Jacobians of {samples} samples ({z_star.shape[1]} state values each)")
    jac = jacobians(frozen, x, z_star)
    eye = torch.eye(jac.shape[1], dtype=jac.dtype)
    oracle = torch.linalg.inv(eye - jac)
    others = (jac.sum(0, keepdim=True) - jac) / max(samples - 1, 1)  # leave-one-out mean
    mean = torch.linalg.inv(eye - others)
    torch.manual_seed(0)
    solver = NeuralSolver.for_model(x, frozen.deq.initial_state(x))
    train_targets = [fixed_point_targets(frozen.deq, t, training) for t in frozen.train_inputs]
    fit_initializer(solver, frozen.train_inputs, train_targets, training)
    with torch.no_grad():
        learned = layout.flatten(solver.initial_state(x))
    starts = {"zero": layout.flatten(frozen.deq.initial_state(x)), "learned initializer": learned}
    rules = {
        "picard": (None, "picard"),
        "anderson": (None, "anderson"),
        "newton, mean Jacobian of other inputs": (mean, "picard"),
        "anderson, mean-Jacobian preconditioned": (mean, "anderson"),
        "newton, own exact Jacobian (oracle)": (oracle, "picard"),
        "anderson, oracle preconditioned": (oracle, "anderson"),
    }
    rows = []
    for rule, (matrix, method) in rules.items():
        row: dict[str, Any] = {"rule": rule}
        for name, start in starts.items():
            nfe = preconditioned_nfe(frozen, x, start, matrix, method, target, cap)
            row[name] = {"median": statistics.median(nfe), "max": max(nfe)}
        rows.append(row)
    radius = torch.linalg.eigvals(jac).abs().max(dim=1).values
    norm = torch.linalg.matrix_norm(jac, ord=2)
    return {
        "samples": samples,
        "state_values": int(z_star.shape[1]),
        "spectral_radius": [float(radius.min()), float(radius.max())],
        "jacobian_norm": [float(norm.min()), float(norm.max())],
        "rules": rows,
    }


def measure(checkpoint: Path, s: Settings, log: Callable = print) -> dict[str, Any]:
    """Both studies on the model of `checkpoint`; the results as a dict."""
    frozen = load_frozen(checkpoint, s.model.sampling)
    training, cap = s.model.training, s.model.cap
    capacity = initializer_capacity(frozen, s.widths, training, s.target, cap)
    bounds = update_bounds(frozen, s.samples, training, s.target, cap, log)
    return {
        "checkpoint": str(checkpoint),
        "model_parameters": frozen.parameters,
        "torch": torch.__version__,
        "target": s.target,
        "initializer_capacity": capacity,
        "update_bounds": bounds,
    }


def render(r: dict[str, Any]) -> Section:
    """The report section for the results of `measure`."""
    b = r["update_bounds"]
    section = Section(
        "neural-limits",
        TITLE,
        summary=(
            "Bounds on what a learned solver could gain on the frozen MDEQ of `equilibria "
            "train`, on held-out test images: initializers of growing size fitted to the fixed "
            "points (their distance to z* and the Anderson NFE from their guess), and update "
            "rules that know more than any small network can: Newton steps preconditioned by "
            "each input's own exact Jacobian at its fixed point (an oracle) or by the mean "
            "Jacobian of the other inputs, plain and inside Anderson."
        ),
        settings={
            "model": f"{r['model_parameters']} parameters ({r['checkpoint']})",
            "target": f"relative residual {r['target']:g}",
            "Jacobians": (
                f"{b['samples']} images, {b['state_values']} state values; spectral radius of J "
                f"at z* {b['spectral_radius'][0]:.2f}-{b['spectral_radius'][1]:.2f}, norm "
                f"{b['jacobian_norm'][0]:.2f}-{b['jacobian_norm'][1]:.2f}"
            ),
            "torch": r["torch"],
        },
    )
    capacity = Table(
        f"Initializer capacity (held-out; median Anderson NFE to rel {r['target']:g} from the "
        "guess)",
        [
            Column("initializer", "initializer"),
            Column("parameters", "parameters"),
            Column("share", "% of the model", ".2f"),
            Column("distance", "distance to z*", ".3f"),
            Column("nfe", "NFE", "g"),
        ],
    )
    for row in r["initializer_capacity"]:
        capacity.add(
            initializer="none (zeros)" if row["width"] is None else f"hidden width {row['width']}",
            parameters=row["parameters"],
            share=100 * row["share"],
            distance=row["distance"],
            nfe=row["nfe"],
        )
    rules = Table(
        f"Update rules: NFE to rel {r['target']:g} on {b['samples']} held-out images",
        [
            Column("rule", "update rule"),
            Column("zero_median", "from zero: median", "g"),
            Column("zero_worst", "from zero: worst", "g"),
            Column("learned_median", "from the learned initializer: median", "g"),
            Column("learned_worst", "from the learned initializer: worst", "g"),
        ],
    )
    for row in b["rules"]:
        zero, learned = row["zero"], row["learned initializer"]
        rules.add(
            rule=row["rule"],
            zero_median=zero["median"],
            zero_worst=zero["max"],
            learned_median=learned["median"],
            learned_worst=learned["max"],
        )
    section.tables += [capacity, rules]
    return section


@register("neural-limits", TITLE, order=232, requires=("sklearn", "matplotlib"))
def run_part(config: BenchConfig) -> Section:
    if config.device != "cpu":
        raise ValueError("the neural solver benchmark runs on the CPU only")
    s = Settings.quick() if config.quick else Settings()
    out = config.out / "neural-limits"
    checkpoint = train_model(out / "model", (f"run.seed={config.seed}", *s.model.train_overrides))
    return render(measure(checkpoint, s, log=lambda text: None))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """`python -m benchmarks.parts.neural_limits --checkpoint RUN/checkpoint.pt`: the bounds on a
    given model; prints the section and writes `results.json`."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.parts.neural_limits", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="a trained MDEQ run")
    parser.add_argument("--out", type=Path, default=Path("results/neural_limits"))
    parser.add_argument("--samples", type=int, default=8, help="images with dense Jacobians")
    parser.add_argument("--widths", default="0,8,16,32", help="initializer hidden widths")
    parser.add_argument("--target", type=float, default=1e-3, help="relative residual")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    widths = tuple(int(w) for w in args.widths.split(","))
    s = Settings(samples=args.samples, widths=widths, target=args.target)
    results = measure(args.checkpoint, s)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(render(results).to_markdown())
    return results


if __name__ == "__main__":
    main()
