"""How far a learned solver could go on a trained MDEQ: the bounds behind the neural benchmark.

The neural benchmark (`benchmarks.neural_solvers`) finds that a learned solver gains a constant
few evaluations from its initial guess and nothing from its learned update. This script asks
whether a better learned solver could do more, on held-out test images of the frozen model:

1. Initializer capacity: initializers of growing size fitted to the fixed points; their
   held-out relative distance to z* and the Anderson NFE to a relative residual from their guess.
2. Update rules with knowledge no small network has: Newton steps z <- z + P (f(z) - z) with
   P = (I - J)^-1 for each input's exact Jacobian J at its own fixed point (an oracle), and with
   the mean Jacobian of the other inputs (the best input-independent preconditioner of that
   form); plain and inside Anderson, from zero and from the learned initial guess.

    python -m benchmarks.neural_limits --checkpoint RUN/checkpoint.pt [--samples 8]
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import equilibria as eq
from equilibria.neural import NeuralSolver, SolverTraining
from equilibria.neural.training import fit_initializer, fixed_point_targets, relative_error
from equilibria.state import StateLayout

from .neural_solvers import Settings, best_residuals, evaluations_to, load_frozen


def initializer_capacity(
    frozen: Any, widths: tuple[int, ...], training: SolverTraining, target: float, cap: int
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


def jacobians(frozen: Any, x: torch.Tensor, z_star: torch.Tensor) -> torch.Tensor:
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
    frozen: Any,
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
    frozen: Any, samples: int, training: SolverTraining, target: float, cap: int, log: Callable
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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="a trained MDEQ run")
    parser.add_argument("--out", type=Path, default=Path("results/neural_limits"))
    parser.add_argument("--samples", type=int, default=8, help="images with dense Jacobians")
    parser.add_argument("--widths", default="0,8,16,32", help="initializer hidden widths")
    parser.add_argument("--target", type=float, default=1e-3, help="relative residual")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = Settings()
    training = settings.training
    frozen = load_frozen(args.checkpoint, settings)
    widths = tuple(int(w) for w in args.widths.split(","))
    capacity = initializer_capacity(frozen, widths, training, args.target, settings.cap)
    bounds = update_bounds(frozen, args.samples, training, args.target, settings.cap, print)
    results = {
        "checkpoint": str(args.checkpoint),
        "model_parameters": frozen.parameters,
        "torch": torch.__version__,
        "target": args.target,
        "initializer_capacity": capacity,
        "update_bounds": bounds,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(render(results))
    return results


def render(r: dict) -> str:
    """Markdown tables of the results."""
    lines = [
        f"Initializer capacity (held-out, median Anderson NFE to rel {r['target']:g} from the "
        "guess):",
        "",
        "| initializer | parameters | % of the model | distance to z* | NFE |",
        "|---|---|---|---|---|",
    ]
    for row in r["initializer_capacity"]:
        name = "none (zeros)" if row["width"] is None else f"hidden width {row['width']}"
        lines.append(
            f"| {name} | {row['parameters']} | {100 * row['share']:.2f} | "
            f"{row['distance']:.3f} | {row['nfe']:g} |"
        )
    b = r["update_bounds"]
    lines += [
        "",
        f"Update rules on {b['samples']} held-out images ({b['state_values']} state values; "
        f"spectral radius of J at z* {b['spectral_radius'][0]:.2f}-{b['spectral_radius'][1]:.2f}, "
        f"norm {b['jacobian_norm'][0]:.2f}-{b['jacobian_norm'][1]:.2f}): NFE to rel "
        f"{r['target']:g}, median / worst:",
        "",
        "| update rule | from zero | from the learned initializer |",
        "|---|---|---|",
    ]
    for row in b["rules"]:
        cells = [
            f"{row[s]['median']:g} / {row[s]['max']:g}" for s in ("zero", "learned initializer")
        ]
        lines.append(f"| {row['rule']} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
