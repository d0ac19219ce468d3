"""How close a learned initial guess can get: initializers of the MDEQ fitted, long and offline, to
the fixed points of a trained MDEQ, and the forward NFE their guesses leave.

An MDEQ with the joint initializer (`deq.init=joint`, the convergence part's digits settings) is
trained by `equilibria train`. Its fixed points are then solved tightly for every training and
test image, and fresh initializers (`MultiscaleInitializer`, hidden layers 1, 2 and 4 times the
state's channels) are fitted to the training ones alone (mean squared error over the levels, Adam,
cosine schedule), which bounds what the joint fit, chasing a moving target, can reach. Test
guesses are scored by their relative residual ||f(z0) - z0|| / ||f(z0)|| and by the forward NFE
from them to the training tolerance (rel 1e-3, cap 100; the whole test set as one batch, as the
convergence part measures it; the zero start for comparison). A second table starts the solves
from the fixed points themselves, moved a set relative distance ||z0 - z*|| / ||z*|| in a random
direction: how near a guess must be to halve the NFE, against how near the learned ones are.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from equilibria.state import StateLayout

from .. import residuals
from ..config import BenchConfig
from ..frozen import Frozen, Sampling, load_frozen
from ..registry import register
from ..report import Check, Column, Section, Table
from ..train_runs import PREVIOUS_IMAGE_BATCH, TRAINING_MODULES, train_model

TIGHT = 1e-6  # relative tolerance of the fixed points the initializers are fitted to
TIGHT_CAP = 100
TOL = 1e-3  # the training tolerance the NFE is counted to
CAP = 100
EXPANSIONS = (1, 2, 4)
DISTANCES = (0.3, 0.1, 0.03, 0.01, 0.003, 0.001)  # of the guesses placed around the fixed points
NFE_RATIO = 2.0  # the convergence part's target for the joint initializer


def fixed_points(frozen: Frozen, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The MDEQ's fixed points for injections `x`, from zeros to rel `TIGHT`."""
    deq = frozen.deq
    with torch.no_grad():
        return deq(x, z0=deq.cell.init_state(x), tol=TIGHT, max_iter=TIGHT_CAP)


def relative_residual(frozen: Frozen, z: tuple[torch.Tensor, ...], x: torch.Tensor) -> torch.Tensor:
    """||f(z) - z|| / ||f(z)|| per sample, f the frozen model's cell."""
    with torch.no_grad():
        return residuals.relative_residual(z, frozen.deq.cell(z, x))


def nfe_from(frozen: Frozen, z0: tuple[torch.Tensor, ...], x: torch.Tensor) -> float:
    """Forward evaluations from `z0` until every sample is below rel `TOL` (cap `CAP`)."""
    with torch.no_grad():
        frozen.deq(x, z0=z0, tol=TOL, max_iter=CAP)
    return float(frozen.deq.stats.forward_nfe)


def fit(
    expansion: int,
    x: torch.Tensor,
    targets: tuple[torch.Tensor, ...],
    groups: int,
    epochs: int,
    seed: int,
) -> torch.nn.Module:
    """A fresh initializer (GroupNorm `groups`) fitted to (injection, fixed point) pairs."""
    from equilibria.models.initializers import MultiscaleInitializer

    torch.manual_seed(seed)
    channels = tuple(t.shape[1] for t in targets)
    net = MultiscaleInitializer(channels, groups, expansion=expansion)
    batch = 64
    steps = epochs * math.ceil(len(x) / batch)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    net.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(batch):
            guess = net(x[idx])
            loss = sum((g - t[idx]).square().mean() for g, t in zip(guess, targets, strict=True))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return net.eval()


def relative_distance(guess: tuple[torch.Tensor, ...], z: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """||z0 - z*|| / ||z*|| per sample, over every level of the state."""
    return residuals.relative_residual(guess, z)


def moved(z: tuple[torch.Tensor, ...], distance: float, seed: int) -> tuple[torch.Tensor, ...]:
    """The states `z` moved `distance` times their norm in a random direction (per sample)."""
    generator = torch.Generator().manual_seed(seed)
    layout = StateLayout.of(z)
    flat = layout.flatten(z)
    step = layout.flatten(tuple(torch.randn(level.shape, generator=generator) for level in z))
    scale = distance * flat.norm(dim=1, keepdim=True) / step.norm(dim=1, keepdim=True)
    return layout.unflatten(flat + scale * step)


def score(
    frozen: Frozen,
    guess: tuple[torch.Tensor, ...],
    x: torch.Tensor,
    fixed: tuple[torch.Tensor, ...],
) -> dict[str, Any]:
    """The guesses' residual quantiles, median distance to the `fixed` points and NFE."""
    residual = relative_residual(frozen, guess, x)
    q = torch.quantile(residual, torch.tensor([0.5, 0.9, 1.0])).tolist()
    distance = float(relative_distance(guess, fixed).median())
    nfe = nfe_from(frozen, guess, x)
    return {"median": q[0], "p90": q[1], "max": q[2], "distance": distance, "nfe": nfe}


@register(
    "initializer-fit",
    "How close a learned initial guess can get",
    order=216,
    requires=TRAINING_MODULES,
)
def run(config: BenchConfig) -> Section:
    epochs, fit_epochs = (2, 3) if config.quick else (10, 60)
    overrides = (
        "model.arch=mdeq",
        "deq.init=joint",
        f"optim.epochs={epochs}",
        PREVIOUS_IMAGE_BATCH,  # the convergence part's batch
        f"run.seed={config.seed}",
        "run.sweep=1",
        "run.threads=1",
    )
    folder = config.out / "initializer-fit"
    checkpoint = train_model(folder / "mdeq-joint", overrides)
    frozen = load_frozen(checkpoint, Sampling(train_batches=8, batch_size=256))
    train_x = torch.cat(frozen.train_inputs)
    test_x = torch.cat(frozen.test_inputs)
    train_z, test_z = fixed_points(frozen, train_x), fixed_points(frozen, test_x)
    worst = float(relative_residual(frozen, test_z, test_x).max())

    table = Table(
        "Test guesses of each initializer: relative residual, forward NFE to rel 1e-3",
        [
            Column("guess", "start of the solve"),
            Column("parameters", "parameters"),
            Column("fit_s", "fit s", ".0f"),
            Column("median", "residual median", ".3f"),
            Column("p90", "residual 90%", ".3f"),
            Column("max", "residual max", ".3f"),
            Column("distance", "distance to z* median", ".3f"),
            Column("nfe", "NFE to rel 1e-3", ".0f"),
        ],
    )
    zeros = score(frozen, frozen.deq.cell.init_state(test_x), test_x, test_z)
    table.add(guess="zeros", parameters=0, **zeros)
    joint = frozen.deq.initializer
    groups = next(m for m in joint.modules() if isinstance(m, torch.nn.GroupNorm)).num_groups
    with torch.no_grad():
        table.add(
            guess="trained jointly with the model",
            parameters=sum(p.numel() for p in joint.parameters()),
            **score(frozen, joint(test_x), test_x, test_z),
        )
    for expansion in EXPANSIONS:
        started = time.perf_counter()
        net = fit(expansion, train_x, train_z, groups, fit_epochs, config.seed)
        seconds = time.perf_counter() - started
        with torch.no_grad():
            table.add(
                guess=f"fitted offline, hidden {expansion}x",
                parameters=sum(p.numel() for p in net.parameters()),
                fit_s=seconds,
                **score(frozen, net(test_x), test_x, test_z),
            )
    best = min(row["nfe"] for row in table.rows[1:])
    nearest = min(row["distance"] for row in table.rows[1:])
    placed = Table(
        "Test solves started at a set distance from their fixed points",
        [
            Column("distance", "distance to z*"),
            Column("median", "residual median", ".3f"),
            Column("nfe", "NFE to rel 1e-3", ".0f"),
        ],
    )
    for distance in DISTANCES:
        row = score(frozen, moved(test_z, distance, config.seed), test_x, test_z)
        placed.add(distance=f"{distance:g}", median=row["median"], nfe=row["nfe"])
    halving = [
        d
        for d, row in zip(DISTANCES, placed.rows, strict=True)
        if NFE_RATIO * row["nfe"] <= zeros["nfe"]
    ]
    section = Section("initializer-fit", "How close a learned initial guess can get")
    section.summary = " ".join(__doc__.split("\n\n", 1)[1].split())
    section.settings = {
        "model": "`equilibria train " + " ".join(overrides) + "` (digits)",
        "fixed points": f"Anderson from zeros to rel {TIGHT:g} (cap {TIGHT_CAP}); largest test "
        f"residual reached {worst:.1e}",
        "fit": f"{fit_epochs} epochs over the {len(train_x)} training images, batch 64, Adam "
        "3e-3, cosine schedule, one thread",
    }
    section.tables += [table, placed]
    section.notes.append(
        f"Halving the zero start's {zeros['nfe']:.0f} evaluations takes a guess within "
        + (f"{max(halving):g}" if halving else f"less than {min(DISTANCES):g}")
        + f" of the fixed point (relative distance); the nearest learned guess is at {nearest:.3f}."
    )
    section.checks.append(
        Check(
            f"some initializer cuts the NFE to rel 1e-3 {NFE_RATIO:g}x against the zero start",
            f"best {best:.0f} vs {zeros['nfe']:.0f} from zeros",
            zeros["nfe"] >= NFE_RATIO * best,
        )
    )
    return section
