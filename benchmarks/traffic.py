"""The memory traffic a solver's own step needs, and the machine's streaming bandwidth.

A solver's step on a large state is bound by memory: its floor is the bytes its algorithm must
read and write per step over the bandwidth the machine streams at. The model counts the
passes over state-sized vectors the algorithm cannot avoid, per state entry:

- picard (undamped): none (the next iterate is the image already computed).
- anderson (history of m): one new Gram row over the m stored residual differences (kept in
  float64: 8 bytes each) and one mix over the m stored iterate differences (state dtype), plus
  forming the plain step x = z + beta g (read 2, write 1), writing x - x_prev and the float64
  g - g_prev into the history (read 2, write 1 each) and writing the result.
- broyden (n updates stored): two passes per stored update (a dot with one vector of the pair,
  an update along the other) for H g, plus reading g and writing the step.
"""

from __future__ import annotations

import statistics

import torch

from .timing import Clock, time_once

FLOAT64_BYTES = 8


def needed_bytes_per_entry(solver: object, itemsize: int, nfe: int) -> float | None:
    """Bytes per state entry that one step of `solver` must move (None: no model for it).

    `nfe` sets the mean history of solvers whose history fills (and restarts) as they go.
    """
    name = getattr(solver, "name", None)
    if name == "picard":
        damping = getattr(solver, "damping", 1.0)
        return 0.0 if damping == 1.0 else 3.0 * itemsize
    if name == "anderson":
        m = min(solver.m, max(nfe - 2, 1))  # the history it has once full
        gram_row = m * FLOAT64_BYTES
        mix = m * itemsize + 2 * itemsize
        new_pair = 3 * itemsize + 3 * FLOAT64_BYTES
        plain_step = 3 * itemsize
        return gram_row + mix + new_pair + plain_step
    if name == "broyden":
        steps = max(nfe - 1, 1)
        stored = statistics.mean(k % solver.memory for k in range(steps))
        return 2 * stored * 2 * itemsize + 2 * itemsize
    return None


def streaming_bandwidth(
    nbytes: int, device: torch.device, clock: Clock, *, repeats: int = 7
) -> float:
    """Bytes per second of a large copy (`nbytes` read and `nbytes` written), median of
    `repeats` after a warm-up: the speed a memory-bound step can reach here."""
    count = max(nbytes // 4, 1)
    source = torch.randn(count, device=device)
    target = torch.empty_like(source)
    target.copy_(source)
    seconds = [time_once(lambda: target.copy_(source), device, clock) for _ in range(repeats)]
    return 2 * count * 4 / statistics.median(seconds)
