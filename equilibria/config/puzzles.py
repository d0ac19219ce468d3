"""The `[puzzles]` config section: reasoning puzzles that get harder (`run.task=puzzles`).

The solver settings of the equilibrium model come from [deq] (its training cap, gradient and
tolerance), the optimizer and epochs from [optim], the batch from [data] and the seed, device and
threads from [run]; this section says which puzzles, how large, and which network solves them.
Sizes left at none take the family's own (`equilibria.puzzles.families.FAMILY_DEFAULTS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .fields import Section, option

FAMILIES = ("prefix_sums", "mazes", "sudoku")
NETWORKS = ("deq", "feedforward", "tied")
SELECTIONS = ("residual", "vote")


@dataclass(frozen=True)
class PuzzlesConfig(Section):
    name: ClassVar[str] = "puzzles"

    family: str = option(
        "prefix_sums",
        "prefix_sums (a bit string -> its running parity), mazes (the path from S to G) or sudoku",
        choices=FAMILIES,
    )
    train_size: int | None = option(
        None,
        "difficulty trained on: bits, maze cells per side, or Sudoku givens (none: the "
        "family's, 32 bits, 5 cells, 36 givens)",
        minimum=1,
    )
    test_sizes: tuple[int, ...] | None = option(
        None,
        "difficulties tested after training (none: the family's, 32,128,512 bits, 5,10,15 "
        "cells, 36,31,26 givens)",
        minimum=1,
    )
    train_puzzles: int = option(
        10000, "generated training puzzles (drawn again from the seed each run)", minimum=1
    )
    test_puzzles: int = option(100, "generated test puzzles per difficulty", minimum=1)
    network: str = option(
        "deq",
        "deq (one cell solved to its equilibrium), feedforward (puzzles.depth different "
        "blocks, the width that matches the deq's parameters) or tied (the deq's cell "
        "applied puzzles.depth times, backpropagated through every step)",
        choices=NETWORKS,
    )
    width: int | None = option(
        None, "channels of the cell's state (none: the family's, 32 / 48 / 64)", minimum=1
    )
    depth: int | None = option(
        None,
        "feedforward and tied only: block applications (none: the deq's training cap)",
        minimum=1,
    )
    start_scale: float = option(
        1.0,
        "training solves start from Gaussian states of this scale, so the model learns an "
        "attractor rather than a path from one start (0: from zeros)",
        minimum=0.0,
    )
    path_noise: float = option(
        0.0,
        "deq only: in training, Gaussian noise of this scale on every state the cell is applied "
        "to, so the model learns an attractor rather than a path (0: none)",
        minimum=0.0,
    )
    early_loss: float = option(
        0.0,
        "deq only: weight of a second loss on one cell application at the state a random "
        "earlier iteration reached, so every state moves towards the answer (0: off)",
        minimum=0.0,
    )
    test_iterations: float = option(
        8.0,
        "test-time cap per unit of difficulty: cap = this x bits, x cells^2 / 2, or x 6 for "
        "Sudoku (the sweep of the report goes up to it)",
        above=0.0,
    )
    breadth: int = option(8, "starts of the breadth row of the report (1: depth only)", minimum=1)
    steps_per_epoch: int | None = option(
        None,
        "training steps between evaluations (none: the family's, 50 / 120 / 50, so that "
        "optim.epochs=20 trains 1000 / 2400 / 1000 steps, of batches of 64 / 32 / 64)",
        minimum=1,
    )
    cache_dir: str | None = option(
        "~/.cache/equilibria/puzzles", "folder that caches generated puzzles (none: no cache)"
    )
