"""Training parity on users' cells: the same model trained by equilibria and by TorchDEQ 0.1.0.

Two parts: `parity` (metric, training time and NFE of both) and `parity-spectrum` (the cell's
spectrum as training goes on). Each task is a cell a user might bring (none of them tuned for
equilibria), an encoder that turns the input into the cell's injection, a decoder, real data
and a training recipe. Both libraries get identical initial weights (one model, deep-copied),
identical batches (one seeded order), the same forward solver (Anderson), tolerance, caps and
test-time settings; each uses its own implicit backward: `eq.Implicit(max_iter=...)` with its
default adjoint solver, and TorchDEQ's `ift=True` with Anderson for the adjoint, as
`benchmarks.peer.make_deq` sets it up.

The same run trains three more recipes from the same start on the same batches:
- "equilibria reversible": `eq.DEQ(cell, tol=..., max_iter=..., backward=eq.Reversible(...))`,
  whose forward is its own coupled iteration (one evaluation for f(z_0), then two per step) and
  whose gradient is the exact gradient of that iteration, rebuilt backwards; its cap is set per
  cell to at most half the forward evaluations of the implicit recipe;
- "equilibria defaults": `eq.DEQ(cell)` with every setting at its default;
- "torchdeq defaults": TorchDEQ's `get_deq()` with every setting at its default (fixed-point
  iteration, 40 evaluations, absolute tolerance 1e-3, one-step gradient: `benchmarks.peer`).

Evaluations are counted the same way for all (`benchmarks.problems.CountingCell`): forward NFE
are cell calls made without autograd (the forward solve), backward NFE are gradients flowing into
a cell output (one per vector-Jacobian product) less the final pass through f(z*) of the
recipes that make one (implicit, one-step); the backward cost is every cell call with autograd
plus every vector-Jacobian product of a training step (the reversible backward's rebuild
evaluates the cell twice per step and pulls two products through it). Training time is thread
CPU time.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import statistics
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, partial

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

import equilibria as eq
from equilibria.data.text import TextData
from equilibria.models import MDEQCell
from equilibria.models.blocks import branch_sizes
from equilibria.reversible import ReconstructionWarning

from .. import peer
from ..config import BenchConfig
from ..datasets import corpus
from ..plots import line_plot
from ..problems import CountingCell, FlatMDEQCell
from ..registry import register
from ..report import Check, Column, Figure, Section, Table
from ..timing import CLOCKS

TIME_TARGET = 0.75  # equilibria's training time at most this multiple of TorchDEQ's
TIME_GOAL = 0.6
# the reversible recipe: at most this fraction of the implicit recipe's forward evaluations, and
# training time at most REVERSIBLE_TIME x TorchDEQ's (implicit recipe)
REVERSIBLE_NFE = 0.5
REVERSIBLE_TIME = 0.6

REFERENCE = ("equilibria", "torchdeq")  # the matched implicit recipes
REVERSIBLE = "equilibria reversible"
DEFAULTS = ("equilibria defaults", "torchdeq defaults")
LIBRARIES = (*REFERENCE, REVERSIBLE, *DEFAULTS)
# the row each recipe's training time is divided by
TIME_REFERENCE = {
    "equilibria": "torchdeq",
    REVERSIBLE: "torchdeq",
    "equilibria defaults": "torchdeq defaults",
}
# recipes whose backward passes once through f(z*) with autograd before any adjoint work
FINAL_PASS = ("equilibria", "torchdeq", *DEFAULTS)
LN2 = math.log(2)


# -- the users' cells ------------------------------------------------------------------------


class ResidualConvCell(nn.Module):
    """h = GN(relu(conv1(z))), out = GN(relu(z + GN(x + conv2(h)))), weight-normed convs."""

    def __init__(self, channels: int = 32, groups: int = 8, residual: bool = True) -> None:
        super().__init__()
        self.conv1 = weight_norm(nn.Conv2d(channels, channels, 3, padding=1))
        self.conv2 = weight_norm(nn.Conv2d(channels, channels, 3, padding=1))
        self.norm1, self.norm2, self.norm3 = (nn.GroupNorm(groups, channels) for _ in range(3))
        self.residual = residual

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(torch.relu(self.conv1(z)))
        mixed = self.norm2(x + self.conv2(h))
        return self.norm3(torch.relu(z + mixed if self.residual else mixed))


class TanhCell(nn.Module):
    """z <- tanh(W z + x), PyTorch's default initialization."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.linear(z) + x)


class TransformerCell(nn.Module):
    """PyTorch's own `nn.TransformerEncoderLayer` (post-norm, causal), weight-tied: f = L(z + x)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(
            width, heads, dim_feedforward=4 * width, dropout=0.0, batch_first=True
        )

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        mask = nn.Transformer.generate_square_subsequent_mask(z.shape[1])
        return self.layer(z + x, src_mask=mask, is_causal=True)


class EquilibriumModel(nn.Module):
    """encoder -> equilibrium of `cell` -> decoder, with the solve supplied from outside."""

    def __init__(self, encoder: nn.Module, cell: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.encoder, self.cell, self.decoder = encoder, cell, decoder

    def zeros(self, x: torch.Tensor) -> torch.Tensor:
        init_state = getattr(self.cell, "init_state", None)
        return init_state(x) if callable(init_state) else torch.zeros_like(x)


class Pool(nn.Module):
    """Mean over every axis after the channel (or feature) one, then a linear layer."""

    def __init__(self, features: int, classes: int, flat: FlatMDEQCell | None = None) -> None:
        super().__init__()
        self.flat = flat
        self.linear = nn.Linear(features, classes)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.flat is not None:  # the branches of a flat multiscale state, pooled apart
            branches = z.split(self.flat.sizes, dim=1)
            pooled = torch.cat(
                [
                    b.view(len(z), *s).mean(dim=(2, 3))
                    for b, s in zip(branches, self.flat.shapes, strict=True)
                ],
                dim=1,
            )
        else:
            pooled = z.mean(dim=tuple(range(2, z.dim()))) if z.dim() > 2 else z
        return self.linear(pooled)


# -- tasks -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """One user cell with its data and recipe."""

    name: str
    description: str
    metric: str  # "accuracy" (higher is better) or "bits/char" (lower is better)
    build: Callable[[], EquilibriumModel]
    data: Callable[[int], Data]
    epochs: int
    batch: int = 32
    lr: float = 2e-3
    # the reversible recipe's evaluation cap (1 + 2 per step) and kept-state interval
    reversible_max_iter: int = 10
    reversible_checkpoint_every: int | str = "auto"


@dataclass
class Data:
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def digits(seed: int, flat: bool = False) -> Data:
    """scikit-learn's digits in [0, 1], a stratified 80/20 split drawn with `seed`."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = torch.tensor(bunch.images / 16.0, dtype=torch.float32).unsqueeze(1)
    images = images.flatten(1) if flat else images
    labels = torch.tensor(bunch.target)
    train, test = train_test_split(
        range(len(labels)), test_size=0.2, stratify=bunch.target, random_state=seed
    )
    return Data(images[train], labels[train], images[test], labels[test])


@cache
def text_corpus() -> tuple[TextData, str]:
    """The language models' corpus (`benchmarks.datasets.corpus`), read once."""
    return corpus()


def text(seed: int, length: int = 64, train_windows: int = 4800, test_windows: int = 64) -> Data:
    """Character windows of the corpus: `train_windows` drawn with `seed` from the training
    split, consecutive validation ones."""
    data, _ = text_corpus()
    generator = torch.Generator().manual_seed(seed)
    starts = data.random_starts(train_windows, length, generator)
    train = data.windows(data.train, starts, length)
    test = data.windows(data.val, data.val_starts(length, test_windows * length), length)
    return Data(*train, *test)


def conv_task(
    name: str, residual: bool, epochs: int, reversible_checkpoint_every: int | str = "auto"
) -> Task:
    def build() -> EquilibriumModel:
        stem = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.GroupNorm(8, 32))
        return EquilibriumModel(stem, ResidualConvCell(residual=residual), Pool(32, 10))

    path = "z + " if residual else ""
    return Task(
        name,
        f"conv cell GN(relu({path}GN(x + conv2(GN(relu(conv1(z))))))), 32 channels, weight "
        "norm; conv+GN stem, mean-pool + linear head; digits",
        "accuracy",
        build,
        digits,
        epochs,
        reversible_checkpoint_every=reversible_checkpoint_every,
    )


def tanh_task(epochs: int) -> Task:
    def build() -> EquilibriumModel:
        return EquilibriumModel(nn.Linear(64, 128), TanhCell(128), Pool(128, 10))

    return Task(
        "mlp-tanh",
        "z = tanh(W z + x), 128 features; linear encoder and head; flattened digits",
        "accuracy",
        build,
        lambda seed: digits(seed, flat=True),
        epochs,
    )


def mdeq_task(epochs: int) -> Task:
    def build() -> EquilibriumModel:
        channels = (16, 32)
        sizes = branch_sizes(8, 8, len(channels))
        shapes = [(c, h, w) for c, (h, w) in zip(channels, sizes, strict=True)]
        cell = FlatMDEQCell(MDEQCell(channels), shapes)
        stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.GroupNorm(4, 16))
        return EquilibriumModel(stem, cell, Pool(48, 10, flat=cell))

    return Task(
        "mdeq",
        "equilibria's MDEQ cell, branches of 16 and 32 channels (8x8, 4x4); conv+GN stem, "
        "pooled branches + linear head; digits",
        "accuracy",
        build,
        digits,
        epochs,
        # the float32 rebuild warns at every training step with the automatic interval (a kept
        # state every 5 steps: none within the 4 steps here), so a state is kept every step
        reversible_checkpoint_every=1,
    )


def transformer_task(epochs: int, train_windows: int) -> Task:
    data, name = text_corpus()
    vocab = len(data.vocab)

    def build() -> EquilibriumModel:
        width = 64
        encoder = CharacterEmbedding(vocab, width, length=64)
        return EquilibriumModel(encoder, TransformerCell(width, heads=4), nn.Linear(width, vocab))

    return Task(
        "transformer",
        "nn.TransformerEncoderLayer (post-norm, causal, width 64, 4 heads) weight-tied; "
        "embedding + learned positions, linear decoder; 64-character windows of " + name,
        "bits/char",
        build,
        lambda seed: text(seed, train_windows=train_windows),
        epochs,
        lr=1e-3,
        reversible_max_iter=5,  # the implicit recipe converges in about 11 evaluations here
    )


class CharacterEmbedding(nn.Module):
    def __init__(self, vocab: int, width: int, length: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.position = nn.Parameter(torch.randn(length, width) * 0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.embed(tokens) + self.position[: tokens.shape[1]]


def tasks(quick: bool) -> list[Task]:
    """The five users' cells; `quick` shortens every recipe to a smoke test."""
    if quick:
        return [
            conv_task("res-conv", True, 1),
            tanh_task(1),
            transformer_task(1, train_windows=64),
        ]
    return [
        # the conv cells' float32 rebuild warned on a few training steps (4 and 3 of 675)
        # with the automatic interval, so a state is kept every step
        conv_task("res-conv", True, 15, reversible_checkpoint_every=1),
        conv_task("plain-conv", False, 15, reversible_checkpoint_every=1),
        tanh_task(15),
        mdeq_task(10),
        transformer_task(2, train_windows=4800),
    ]


# -- one training run --------------------------------------------------------------------------


@dataclass(frozen=True)
class SolveCaps:
    tol: float = 1e-3
    max_iter: int = 20
    backward_max_iter: int = 20
    reversible_max_iter: int = 10  # the reversible recipe's cap (set per task by `run_task`)
    reversible_checkpoint_every: int | str = "auto"


@dataclass
class RunResult:
    metric: float
    train_seconds: float
    forward_nfe: float  # mean per training step
    backward_nfe: float
    train_residual: float  # mean relative residual of the training solves in the last epoch
    test_converged: float  # fraction of test samples whose solve reached the tolerance
    backward_cost: float = math.nan  # cell calls with autograd + VJPs, mean per training step
    rebuild_warnings: int = 0  # ReconstructionWarnings of the reversible backward in training


Solve = Callable[[torch.Tensor, bool], tuple[torch.Tensor, torch.Tensor]]


def deq_solve(model: EquilibriumModel, deq: eq.DEQ) -> Solve:
    """The solve of an equilibria DEQ from the model's zero state, with its residuals."""

    def solve(x: torch.Tensor, training: bool) -> tuple[torch.Tensor, torch.Tensor]:
        deq.train(training)
        z = deq(x, model.zeros(x))
        return z, deq.stats.rel_residual

    return solve


def equilibria_solve(
    model: EquilibriumModel,
    counter: CountingCell,
    caps: SolveCaps,
    adjoint: eq.Solver | None = None,
) -> Solve:
    """equilibria's DEQ with its default implicit backward (or the adjoint solver named)."""
    deq = eq.DEQ(
        counter,
        "anderson",
        tol=caps.tol,
        max_iter=caps.max_iter,
        backward=eq.Implicit(adjoint, max_iter=caps.backward_max_iter),
        on_failure="ignore",
    )

    return deq_solve(model, deq)


def torchdeq_solve(model: EquilibriumModel, counter: CountingCell, caps: SolveCaps) -> Solve:
    settings = peer.PeerSettings(
        "anderson", caps.tol, caps.tol, "rel", caps.max_iter, caps.backward_max_iter
    )
    deq = peer.make_deq(settings)

    def solve(x: torch.Tensor, training: bool) -> tuple[torch.Tensor, torch.Tensor]:
        deq.train(training)
        z, info = peer.forward(deq, lambda z: counter(z, x), model.zeros(x), {})
        return z, info["rel_lowest"]

    return solve


def reversible_solve(model: EquilibriumModel, counter: CountingCell, caps: SolveCaps) -> Solve:
    """equilibria's reversible DEQ: its own forward iteration, exact gradient of it."""
    deq = eq.DEQ(
        counter,
        tol=caps.tol,
        max_iter=caps.reversible_max_iter,
        backward=eq.Reversible(checkpoint_every=caps.reversible_checkpoint_every),
        on_failure="ignore",
    )

    return deq_solve(model, deq)


def equilibria_default_solve(
    model: EquilibriumModel, counter: CountingCell, caps: SolveCaps
) -> Solve:
    """`eq.DEQ(cell)`: every setting at its default (`caps` is not used)."""
    deq = eq.DEQ(counter)

    return deq_solve(model, deq)


def torchdeq_default_solve(
    model: EquilibriumModel, counter: CountingCell, caps: SolveCaps
) -> Solve:
    """TorchDEQ's `get_deq()`: every setting at its default (`caps` is not used)."""
    deq = peer.default_deq()

    def solve(x: torch.Tensor, training: bool) -> tuple[torch.Tensor, torch.Tensor]:
        deq.train(training)
        z, info = peer.forward(deq, lambda z: counter(z, x), model.zeros(x), {})
        return z, info["rel_lowest"]

    return solve


SOLVES = {
    "equilibria": equilibria_solve,
    "torchdeq": torchdeq_solve,
    REVERSIBLE: reversible_solve,
    "equilibria defaults": equilibria_default_solve,
    "torchdeq defaults": torchdeq_default_solve,
    # ablations of the adjoint's solver, for the spectrum part
    "equilibria, Anderson adjoint": partial(equilibria_solve, adjoint=eq.Anderson()),
    "equilibria, adjoint damping 0.5": partial(equilibria_solve, adjoint=eq.Picard(damping=0.5)),
}


def cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """Cross-entropy of class scores (batch, classes) or (batch, length, vocab)."""
    return nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.flatten(), reduction=reduction
    )


def train_once(
    task: Task,
    library: str,
    model: EquilibriumModel,
    data: Data,
    seed: int,
    caps: SolveCaps,
    after_epoch: Callable[[EquilibriumModel, list[float]], None] | None = None,
) -> RunResult:
    """Train `model` (already initialized) with `library`'s DEQ and evaluate it.

    `after_epoch(model, residuals)` runs after each epoch (outside the timed steps) with the
    epoch's training-solve residuals. Warnings raised meanwhile are recorded, not shown (the
    default recipes warn on every solve that misses its tolerance); the reversible backward's
    `ReconstructionWarning`s are counted."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = _train_once(task, library, model, data, seed, caps, after_epoch)
    result.rebuild_warnings = sum(issubclass(w.category, ReconstructionWarning) for w in caught)
    return result


def _train_once(
    task: Task,
    library: str,
    model: EquilibriumModel,
    data: Data,
    seed: int,
    caps: SolveCaps,
    after_epoch: Callable[[EquilibriumModel, list[float]], None] | None,
) -> RunResult:
    counter = CountingCell(model.cell)
    solve = SOLVES[library](model, counter, caps)
    optimizer = torch.optim.Adam(model.parameters(), lr=task.lr)
    order = torch.Generator().manual_seed(seed)
    clock = CLOCKS["cpu"]
    seconds, steps, residuals = 0.0, 0, []
    for _ in range(task.epochs):
        residuals = []
        permutation = torch.randperm(len(data.train_y), generator=order)
        for start in range(0, len(permutation), task.batch):
            index = permutation[start : start + task.batch]
            began = clock()
            model.train()
            z, residual = solve(model.encoder(data.train_x[index]), True)
            loss = cross_entropy(model.decoder(z), data.train_y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seconds += clock() - began
            steps += 1
            residuals.append(float(residual.mean()))
        if after_epoch is not None:
            after_epoch(model, residuals)
    solve_calls, backward_passes = counter.solve_calls, counter.backward_passes
    graph_calls = counter.forward_calls - solve_calls  # cell calls with autograd
    metric, converged = evaluate(task, model, solve, data, caps)
    trained = steps > 0  # zero epochs evaluate the initial model
    final_pass = 1 if library in FINAL_PASS else 0
    return RunResult(
        metric=metric,
        train_seconds=seconds,
        forward_nfe=solve_calls / steps if trained else 0.0,
        # less the final pass through f(z*) of each step, where the recipe makes one
        backward_nfe=backward_passes / steps - final_pass if trained else 0.0,
        train_residual=statistics.fmean(residuals) if trained else math.nan,
        test_converged=converged,
        backward_cost=(graph_calls + backward_passes) / steps if trained else 0.0,
    )


@torch.no_grad()
def evaluate(
    task: Task, model: EquilibriumModel, solve: Solve, data: Data, caps: SolveCaps
) -> tuple[float, float]:
    """The test metric and the fraction of test solves whose relative residual is below the
    tolerance of `caps` (the same yardstick for every recipe, whatever its own stopping rule)."""
    model.eval()
    scores, reached = [], []
    for start in range(0, len(data.test_y), 256):
        x, y = data.test_x[start : start + 256], data.test_y[start : start + 256]
        z, residual = solve(model.encoder(x), False)
        logits = model.decoder(z)
        if task.metric == "accuracy":
            scores.append((logits.argmax(-1) == y).float())
        else:
            scores.append(cross_entropy(logits, y, reduction="none") / LN2)
        reached.append((residual <= caps.tol).float())
    return float(torch.cat(scores).mean()), float(torch.cat(reached).mean())


def run_task(
    task: Task,
    seeds: list[int],
    caps: SolveCaps,
    libraries: tuple[str, ...] = LIBRARIES,
) -> dict[str, list[RunResult]]:
    """Every seed trained by every recipe in `libraries` from the same weights, interleaved."""
    caps = dataclasses.replace(
        caps,
        reversible_max_iter=task.reversible_max_iter,
        reversible_checkpoint_every=task.reversible_checkpoint_every,
    )
    results: dict[str, list[RunResult]] = {library: [] for library in libraries}
    for seed in seeds:
        data = task.data(seed)
        torch.manual_seed(seed)
        initial = task.build()
        for library in libraries:
            torch.manual_seed(seed)  # the same draws for anything random during training
            model = copy.deepcopy(initial)
            results[library].append(train_once(task, library, model, data, seed, caps))
    return results


# -- why: the spectrum of the cell's Jacobian as training goes on ------------------------------


@dataclass
class SpectrumTrace:
    """Per epoch: the median and the fraction above 1 of the probe samples' spectral radius of
    J_f at their training-mode solve's output, and the mean training residual."""

    radius_median: list[float]
    above_one: list[float]
    residual: list[float]
    metric: float


def spectrum_during_training(
    task: Task, seed: int, library: str, caps: SolveCaps, probes: int = 32
) -> SpectrumTrace:
    """Train as `run_task` does and measure the spectrum of J_f after every epoch."""
    data = task.data(seed)
    torch.manual_seed(seed)
    model = task.build()
    probe = data.train_x[:probes]
    trace = SpectrumTrace([], [], [], math.nan)

    def measure(model: EquilibriumModel, residuals: list[float]) -> None:
        model.eval()
        with torch.no_grad():
            x = model.encoder(probe)
            solution = eq.solve(
                lambda z: model.cell(z, x),
                model.zeros(x),
                "anderson",
                tol=caps.tol,
                max_iter=caps.max_iter,
                on_failure="ignore",
            )
        radius = eq.spectral_radius(lambda z: model.cell(z, x), solution.z, iters=60)
        trace.radius_median.append(float(radius.median()))
        trace.above_one.append(float((radius > 1).float().mean()))
        trace.residual.append(statistics.fmean(residuals))

    torch.manual_seed(seed)
    trace.metric = train_once(task, library, model, data, seed, caps, measure).metric
    return trace


# ---------------------------------------------------------------------- the parts


def mean_and_error(values: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (0 for a single value)."""
    mean = statistics.fmean(values)
    error = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return mean, error


@register(
    "parity",
    "Training parity with TorchDEQ 0.1.0 on users' cells",
    order=120,
    requires=("torchdeq", "sklearn"),
)
def run_part(config: BenchConfig) -> Section:
    if config.device != "cpu":
        raise ValueError("the parity benchmark runs on the CPU only (thread CPU time)")
    caps = SolveCaps()
    seeds = config.seed_list(2 if config.quick else 3)
    every = tasks(config.quick)
    chosen = config.pick_cases([task.name for task in every])
    section = Section("parity", "Training parity with TorchDEQ 0.1.0 on users' cells")
    section.summary = (
        "Each cell is trained by both libraries from the same initial weights on the same "
        "batches, with the same forward solver (Anderson), tolerance, caps and test-time "
        "settings; equilibria uses its default implicit backward `eq.Implicit(max_iter=...)`, "
        "TorchDEQ its implicit backward (`ift=True`) with Anderson on the adjoint. The same run "
        "trains, from the same start on the same batches, equilibria's reversible DEQ "
        "(`backward=eq.Reversible()`, b 0.5: its own forward iteration, two evaluations per "
        "step, with the same tolerance and a cap of at most half the implicit recipe's "
        "evaluations; exact gradient of that iteration) and each library with every setting "
        "at its default (`eq.DEQ(cell)`: Anderson, rel tol 1e-4, cap 50, implicit backward; "
        "TorchDEQ's `get_deq()`: fixed-point iteration, abs tol 1e-3, cap 40, one-step "
        "gradient). Metric: test accuracy (higher is better) or validation bits per character "
        "(lower is better), mean +- standard error over seeds. Time: thread CPU time of "
        "training (1 thread), mean over seeds; the ratio is the mean of per-seed ratios to "
        "TorchDEQ's row of the same kind (equilibria's defaults to TorchDEQ's defaults, every "
        "other row to TorchDEQ's implicit recipe). NFE per training step: forward = cell calls "
        "of the forward solve, backward = vector-Jacobian products of the backward (less the "
        "final pass through f(z*) of the recipes that make one); backward cost = every cell "
        "call with autograd plus every vector-Jacobian product of a step. Residual: mean "
        "relative residual of the training solves in the last epoch; converged: fraction of "
        f"test solves whose relative residual is below {caps.tol:g}, for every row (is the "
        "output an equilibrium?)."
    )
    section.settings = {
        "seeds": ", ".join(map(str, seeds)),
        "cells": ", ".join(chosen),
        "forward": f"anderson, rel tol {caps.tol:g}, cap {caps.max_iter}",
        "backward": f"implicit, cap {caps.backward_max_iter}, tol {caps.tol:g}",
        "reversible": "b 0.5, rel tol "
        f"{caps.tol:g}, cap per cell: "
        + ", ".join(f"{t.name} {t.reversible_max_iter}" for t in every if t.name in chosen),
        "optimizer": "Adam, batch 32",
    }
    table = Table(
        "Users' cells trained by both libraries",
        [
            Column("task", "cell"),
            Column("library", "library"),
            Column("metric", "metric"),
            Column("score", "mean +- s.e."),
            Column("per_seed", "per seed"),
            Column("seconds", "train s", ".1f"),
            Column("time_ratio", "time / TorchDEQ", ".2f"),
            Column("forward_nfe", "fwd NFE", ".1f"),
            Column("backward_nfe", "bwd NFE", ".1f"),
            Column("backward_cost", "bwd cost", ".1f"),
            Column("residual", "train residual", ".3g"),
            Column("converged", "test converged", ".2f"),
        ],
    )
    section.tables.append(table)
    everything: dict[str, tuple[Task, dict[str, list[RunResult]]]] = {}
    for task in every:
        if task.name not in chosen:
            continue
        results = run_task(task, seeds, caps)
        everything[task.name] = (task, results)
        add_rows(table, task, results)
        section.checks.extend(checks(task, results))
        warned = sum(r.rebuild_warnings for r in results[REVERSIBLE])
        section.notes.append(
            f"{task.name}: {task.description}; {task.epochs} epoch(s), lr {task.lr:g}; "
            f"reversible cap {task.reversible_max_iter}, kept state every "
            f"{task.reversible_checkpoint_every} step(s), {warned} rebuild warning(s)"
        )
    section.checks.extend(reversible_accuracy_checks(everything))
    return section


def _time_ratio(results: dict[str, list[RunResult]], library: str = "equilibria") -> float:
    """The mean per-seed ratio of `library`'s training time to its TorchDEQ reference's."""
    ours, theirs = results[library], results[TIME_REFERENCE[library]]
    return statistics.fmean(
        a.train_seconds / b.train_seconds for a, b in zip(ours, theirs, strict=True)
    )


def add_rows(table: Table, task: Task, results: dict[str, list[RunResult]]) -> None:
    digits = 1 if task.metric == "accuracy" else 3
    scale = 100 if task.metric == "accuracy" else 1
    for library in (name for name in LIBRARIES if name in results):
        runs = results[library]
        mean, error = mean_and_error([r.metric * scale for r in runs])
        table.add(
            task=task.name,
            library=library,
            metric="accuracy %" if task.metric == "accuracy" else task.metric,
            score=f"{mean:.{digits}f} +- {error:.{digits}f}",
            per_seed=", ".join(f"{r.metric * scale:.{digits}f}" for r in runs),
            seconds=statistics.fmean(r.train_seconds for r in runs),
            time_ratio=_time_ratio(results, library) if library in TIME_REFERENCE else 1.0,
            forward_nfe=statistics.fmean(r.forward_nfe for r in runs),
            backward_nfe=statistics.fmean(r.backward_nfe for r in runs),
            backward_cost=statistics.fmean(r.backward_cost for r in runs),
            residual=statistics.fmean(r.train_residual for r in runs),
            converged=statistics.fmean(r.test_converged for r in runs),
        )


def compare(
    task: Task, results: dict[str, list[RunResult]], ours: str, theirs: str
) -> tuple[bool, str]:
    """Whether `ours`'s mean metric is at least as good as `theirs`'s within one standard error
    of the difference, and the numbers that say so."""
    mean_ours, error_ours = mean_and_error([r.metric for r in results[ours]])
    mean_theirs, error_theirs = mean_and_error([r.metric for r in results[theirs]])
    error = math.hypot(error_ours, error_theirs)
    gap = mean_ours - mean_theirs if task.metric == "accuracy" else mean_theirs - mean_ours
    text = f"{mean_ours:.4g} vs {mean_theirs:.4g} (s.e. of the difference {error:.2g})"
    return gap >= -error, text


def _claim(task: Task) -> str:
    return "accuracy at least" if task.metric == "accuracy" else f"{task.metric} at most"


def checks(task: Task, results: dict[str, list[RunResult]]) -> list[Check]:
    """The metric at least the peer's within one standard error, and the time targets; with the
    reversible and default recipes in `results`, their targets too."""
    claim = _claim(task)
    passed, text = compare(task, results, "equilibria", "torchdeq")
    ratio = _time_ratio(results)
    found = [
        Check(f"{task.name}: mean {claim} TorchDEQ's (within one standard error)", text, passed),
        Check(
            f"{task.name}: training time at most {TIME_TARGET:g}x TorchDEQ's (goal {TIME_GOAL:g}x)",
            f"{ratio:.2f}x",
            ratio <= TIME_TARGET,
        ),
    ]
    if REVERSIBLE in results:
        found.extend(reversible_checks(task, results))
    if all(library in results for library in DEFAULTS):
        passed, text = compare(task, results, *DEFAULTS)
        ratio = _time_ratio(results, DEFAULTS[0])
        found += [
            Check(
                f"{task.name}, defaults: equilibria's mean {claim} TorchDEQ's (within one "
                "standard error)",
                text,
                passed,
            ),
            Check(
                f"{task.name}, defaults: equilibria's training time at most TorchDEQ's",
                f"{ratio:.2f}x",
                ratio <= 1.0,
            ),
        ]
    return found


def reversible_checks(task: Task, results: dict[str, list[RunResult]]) -> list[Check]:
    """Per cell: at most half the implicit recipe's forward evaluations, time at most
    `REVERSIBLE_TIME` x TorchDEQ's, and on the MDEQ cell a metric at least TorchDEQ's."""
    nfe = statistics.fmean(r.forward_nfe for r in results[REVERSIBLE])
    implicit = statistics.fmean(r.forward_nfe for r in results["equilibria"])
    ratio = _time_ratio(results, REVERSIBLE)
    found = [
        Check(
            f"{task.name}, reversible: forward NFE at most {REVERSIBLE_NFE:g}x the implicit "
            "recipe's",
            f"{nfe:.1f} vs {implicit:.1f}",
            nfe <= REVERSIBLE_NFE * implicit,
        ),
        Check(
            f"{task.name}, reversible: training time at most {REVERSIBLE_TIME:g}x TorchDEQ's",
            f"{ratio:.2f}x",
            ratio <= REVERSIBLE_TIME,
        ),
    ]
    if task.name == "mdeq":
        passed, text = compare(task, results, REVERSIBLE, "torchdeq")
        found.append(
            Check(
                f"{task.name}, reversible: mean {_claim(task)} TorchDEQ's (within one standard "
                "error)",
                text,
                passed,
            )
        )
    return found


def reversible_accuracy_checks(
    everything: dict[str, tuple[Task, dict[str, list[RunResult]]]],
) -> list[Check]:
    """The reversible recipe's metric no worse than the implicit recipe's (within one standard
    error) on all but at most one of the cells run (4 of 5 when all five run)."""
    verdicts = {
        name: compare(task, results, REVERSIBLE, "equilibria")[0]
        for name, (task, results) in everything.items()
        if REVERSIBLE in results
    }
    if not verdicts:
        return []
    needed = max(1, len(verdicts) - 1)
    met = sum(verdicts.values())
    worse = [name for name, passed in verdicts.items() if not passed]
    return [
        Check(
            f"reversible: metric no worse than the implicit recipe's (within one standard "
            f"error) on at least {needed} of {len(verdicts)} cells",
            f"{met} of {len(verdicts)}" + (f" (worse: {', '.join(worse)})" if worse else ""),
            met >= needed,
        )
    ]


def seed_mean(curves: list[list[float]]) -> list[float]:
    """The pointwise mean of equally long per-seed curves."""
    return [statistics.fmean(values) for values in zip(*curves, strict=True)]


SPECTRUM_VARIANTS = (
    "equilibria",
    "equilibria, adjoint damping 0.5",
    "equilibria, Anderson adjoint",
    "torchdeq",
)


@register(
    "parity-spectrum",
    "Why the adjoint's solver matters: the cell's spectrum as training goes on",
    order=121,
    requires=("torchdeq", "sklearn", "matplotlib"),
)
def run_spectrum_part(config: BenchConfig) -> Section:
    if config.device != "cpu":
        raise ValueError("the parity benchmark runs on the CPU only")
    caps = SolveCaps()
    task = tasks(config.quick)[0]
    seeds = [config.seed + i for i in range(1 if config.quick else 2)]
    traces = {
        variant: [spectrum_during_training(task, seed, variant, caps) for seed in seeds]
        for variant in SPECTRUM_VARIANTS
    }
    section = Section(
        "parity-spectrum",
        "Why the adjoint's solver matters: the cell's spectrum as training goes on",
    )
    section.summary = (
        f"The {task.name} cell trained as in the parity table by equilibria (default adjoint: "
        "damped fixed-point iteration, damping 0.3), by equilibria with damping 0.5 or with "
        "Anderson on the adjoint (the default before), and by TorchDEQ. After every epoch, on "
        "32 fixed training images: the spectral radius of the cell's Jacobian at the output "
        "of a training-mode solve (Anderson, the same caps; `eq.spectral_radius`, 60 block "
        "power iterations), its median and the fraction of images above 1 (no stable fixed "
        "point there: the forward solve cannot converge and the exact implicit gradient has "
        "the wrong sign on that mode); and the mean relative residual of that epoch's "
        "training solves. Values are means over seeds."
    )
    section.settings = {"seeds": ", ".join(map(str, seeds)), "epochs": str(task.epochs)}
    table = Table(
        "Spectral radius of J_f and training residual by epoch (mean over seeds)",
        [
            Column("variant", "trained by"),
            Column("epoch", "epoch"),
            Column("radius", "median spectral radius", ".3f"),
            Column("above_one", "fraction above 1", ".2f"),
            Column("residual", "train residual", ".3g"),
            Column("metric", "final test accuracy %", ".1f"),
        ],
    )
    epochs = range(1, task.epochs + 1)
    shown = sorted({1, 2, 4, task.epochs // 2, task.epochs} & set(epochs))
    curves: dict[str, dict[str, tuple[list[int], list[float]]]] = {
        "radius": {},
        "above": {},
        "residual": {},
    }
    for variant, runs in traces.items():
        radius = seed_mean([r.radius_median for r in runs])
        above = seed_mean([r.above_one for r in runs])
        residual = seed_mean([r.residual for r in runs])
        for key, values in (("radius", radius), ("above", above), ("residual", residual)):
            curves[key][variant] = (list(epochs), values)
        for epoch in shown:
            table.add(
                variant=variant,
                epoch=epoch,
                radius=radius[epoch - 1],
                above_one=above[epoch - 1],
                residual=residual[epoch - 1],
                metric=100 * statistics.fmean(r.metric for r in runs)
                if epoch == task.epochs
                else None,
            )
    section.tables.append(table)
    path = line_plot(
        config.out / "parity_spectrum.png",
        [
            ("median spectral radius of J_f", "radius", curves["radius"]),
            ("fraction of images above 1", "fraction", curves["above"]),
            ("training residual", "mean relative residual", curves["residual"]),
        ],
        xlabel="epoch",
    )
    section.figures.append(
        Figure(path.name, f"The {task.name} cell's spectrum and residual during training")
    )
    return section
