"""The networks that solve puzzles: one cell solved to its equilibrium, and the two explicit
baselines at the same parameter count (a feed-forward stack at the training depth, and the same
weight-tied cell unrolled a fixed number of times, backpropagated through every step).

Every network is `embed` (the puzzle to `u`, injected at every application), a core that maps
`u` to a state, and `head` (the state to per-position class logits).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..deq import DEQ, DEQStats
from ..errors import check_choice, check_positive_int
from .families import FamilySpec

NETWORKS = ("deq", "feedforward", "tied")


class NoisyCell(nn.Module):
    """`cell` with Gaussian noise of `scale` added to the state it is applied to, in training
    only: the solver's path is perturbed, so the model learns an attractor that pulls nearby
    states in rather than one path that reaches it."""

    def __init__(self, cell: nn.Module, scale: float) -> None:
        super().__init__()
        self.cell = cell
        self.scale = float(scale)

    def forward(self, z: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        if self.training and self.scale > 0:
            z = z + self.scale * torch.randn_like(z)
        return self.cell(z, u)


class PuzzleModel(nn.Module):
    """Logits (batch, classes, *positions) for a batch of puzzles in their family's encoding.

    Args:
        spec: the family (how puzzles are embedded, which cell and head).
        width: channels of the state.
        network: "deq", "feedforward" or "tied".
        depth: block applications of the explicit networks.
        block_width: width of each feed-forward block (None: `width`).
        deq_options: keyword arguments of the `eq.DEQ` (network "deq").
        start_scale: training solves start from N(0, start_scale^2) states (0: zeros).
        path_noise: in training, Gaussian noise of this scale on every state the DEQ's cell is
            applied to (0: none).
    """

    def __init__(
        self,
        spec: FamilySpec,
        width: int,
        network: str = "deq",
        *,
        depth: int = 1,
        block_width: int | None = None,
        deq_options: dict[str, Any] | None = None,
        start_scale: float = 1.0,
        path_noise: float = 0.0,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.network = check_choice("network", network, NETWORKS)
        self.width = check_positive_int("width", width)
        self.depth = check_positive_int("depth", depth)
        self.start_scale = float(start_scale)
        inner = block_width or width if network == "feedforward" else width
        self.embed = spec.embedding(inner)
        self.head = spec.head(inner)
        if network == "feedforward":
            self.blocks = nn.ModuleList(spec.cell(inner) for _ in range(depth))
        else:
            self.cell = spec.cell(width)
        if network == "deq":
            solved = NoisyCell(self.cell, path_noise) if path_noise > 0 else self.cell
            self.deq = DEQ(solved, **(deq_options or {}))

    @property
    def stats(self) -> DEQStats | None:
        """The last solve's statistics (None for the explicit networks)."""
        return self.deq.stats if self.network == "deq" else None

    def initial_state(self, u: torch.Tensor, scale: float | None = None) -> torch.Tensor:
        """Zeros, or Gaussian states of `scale` (default: the training scale in training)."""
        scale = (self.start_scale if self.training else 0.0) if scale is None else scale
        if scale == 0:
            return torch.zeros_like(u)
        return scale * torch.randn_like(u)

    def state(self, inputs: torch.Tensor, z0: torch.Tensor | None = None, **solve: Any):
        """The core's output for `inputs`; `solve` (solver, tol, max_iter, on_failure) sets the
        DEQ's solve for this call, and max_iter the applications of the tied network."""
        u = self.embed(inputs)
        z = self.initial_state(u) if z0 is None else z0
        if self.network == "deq":
            return self.deq(u, z, **solve)
        if self.network == "tied":
            for _ in range(solve.get("max_iter") or self.depth):
                z = self.cell(z, u)
            return z
        for block in self.blocks:
            z = block(z, u)
        return z

    def forward(self, inputs: torch.Tensor, z0: torch.Tensor | None = None, **solve: Any):
        return self.logits(self.state(inputs, z0, **solve), inputs)

    def early_logits(self, inputs: torch.Tensor, iterations: int) -> torch.Tensor:
        """Logits of one differentiable cell application at the (detached) state the DEQ's
        solve reaches after `iterations` iterations: a loss on them asks every state along the
        way to move towards the answer, not only the fixed point."""
        u = self.embed(inputs)
        with torch.no_grad():
            z = self.deq(u, self.initial_state(u), max_iter=iterations, on_failure="ignore")
        return self.logits(self.cell(z, u), inputs)

    def logits(self, z: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """The head on state `z`, with the answers the puzzle rules out masked away."""
        return self.spec.mask(self.head(z), inputs)

    def answer(self, z: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """The discrete answer (the family's target encoding) of state `z`."""
        return self.spec.decode(self.logits(z, inputs))


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def matched_block_width(spec: FamilySpec, width: int, depth: int) -> int:
    """The width at which a feed-forward network of `depth` blocks has about as many parameters
    as the weight-tied network of `width` (never below 1)."""
    target = parameter_count(PuzzleModel(spec, width, "tied"))
    best, best_gap = 1, math.inf
    for candidate in range(1, width + 1):
        count = parameter_count(
            PuzzleModel(spec, width, "feedforward", depth=depth, block_width=candidate)
        )
        if abs(count - target) < best_gap:
            best, best_gap = candidate, abs(count - target)
    return best
