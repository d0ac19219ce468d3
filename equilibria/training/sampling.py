"""Which samples each step sees, and the seed of each step's randomness.

Everything is a function of (seed, epoch, step, rank), never of hidden generator state, so a run
resumed at any step sees the same batches, augmentations and dropout masks as one that never
stopped, and N processes together see exactly the batches one process would.
"""

from __future__ import annotations

import torch

from ..config import ConfigError

_MIX = 1_000_003  # a prime mixing (seed, epoch) and (seed, step, rank) into one integer seed


def steps_per_epoch(count: int, batch_size: int) -> int:
    """Full batches per epoch (the last partial batch is dropped in training)."""
    steps = count // batch_size
    if steps == 0:
        raise ConfigError(
            f"data.batch_size={batch_size} is larger than the {count} training samples; "
            f"use at most {count}"
        )
    return steps


def epoch_order(count: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of the training samples for `epoch`."""
    generator = torch.Generator().manual_seed(seed * _MIX + epoch)
    return torch.randperm(count, generator=generator)


def train_batches(
    count: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1
) -> list[torch.Tensor]:
    """This process's index batches for `epoch`: global batch k is samples
    order[k * batch_size : (k + 1) * batch_size], of which rank r takes every world_size-th."""
    if batch_size % world_size:
        raise ConfigError(
            f"data.batch_size={batch_size} is the batch over all {world_size} processes and must "
            f"be a multiple of that number"
        )
    order = epoch_order(count, seed, epoch)
    steps = steps_per_epoch(count, batch_size)
    return [order[k * batch_size : (k + 1) * batch_size][rank::world_size] for k in range(steps)]


def shard(count: int, rank: int = 0, world_size: int = 1) -> torch.Tensor:
    """This process's share of `count` evaluation samples."""
    return torch.arange(rank, count, world_size)


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """The seed of training step `step` on process `rank` (augmentation, dropout, penalties)."""
    return ((seed * _MIX + step) * _MIX + rank) % (2**63 - 1)
