"""Random jitter of the forward iteration cap during training.

Training always at the same cap lets a model come to rely on exactly that many iterations;
drawing the cap anew each training call from [max_iter - jitter, max_iter] keeps the output
good across budgets (and never spends more than the configured cap).
"""

from __future__ import annotations

import torch

from .draws import decision_generator


def jittered_cap(max_iter: int, jitter: int) -> int:
    """A cap drawn uniformly from [max(1, max_iter - jitter), max_iter] (from the
    `shared_draws` generator when one is active, else torch's global one)."""
    if jitter <= 0:
        return max_iter
    low = max(1, max_iter - jitter)
    return int(torch.randint(low, max_iter + 1, (), generator=decision_generator()))
