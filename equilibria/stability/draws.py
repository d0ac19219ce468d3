"""Random training decisions that every process must take alike.

Whether a step computes the Jacobian penalty and which iteration cap it trains at change what
the model computes, so under data parallelism every process has to draw the same value, while
dropout masks and augmentations should differ between processes. Inside `shared_draws(seed)`
those decisions come from a generator seeded by `seed` alone (the trainer passes a seed of the
step, not of the process); outside it they use torch's global generator.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

_generators: list[torch.Generator] = []


@contextmanager
def shared_draws(seed: int) -> Iterator[torch.Generator]:
    """Take the training decisions inside this block from a generator seeded by `seed`."""
    generator = torch.Generator().manual_seed(seed)
    _generators.append(generator)
    try:
        yield generator
    finally:
        _generators.pop()


def decision_generator() -> torch.Generator | None:
    """The generator of the innermost `shared_draws` block, or None (torch's global one)."""
    return _generators[-1] if _generators else None
