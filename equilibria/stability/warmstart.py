"""Warm starts: begin the solve from a fixed point found before.

A DEQ call accepts `z0=`: passing the previous call's output (detached) helps wherever the
input changes slowly between calls (video frames, implicit representations refitted every step).
For data sets that are revisited epoch after epoch, `FixedPointCache` keeps each sample's last
fixed point under its index and hands it back as that sample's initial state.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch

from ..errors import check_positive_int
from ..state import State, StateLayout


def _as_keys(indices: torch.Tensor | Sequence[int], batch: int) -> list[int]:
    if isinstance(indices, torch.Tensor):
        if indices.dim() != 1 or indices.is_floating_point() or indices.is_complex():
            raise TypeError(
                "indices must be a 1-d integer tensor or a sequence of ints, got a tensor of "
                f"shape {tuple(indices.shape)} and dtype {indices.dtype}"
            )
        keys = indices.tolist()
    else:
        keys = list(indices)
        if not all(isinstance(k, int) and not isinstance(k, bool) for k in keys):
            raise TypeError("indices must be integers (one sample index per batch entry)")
    if len(keys) != batch:
        raise ValueError(f"got {len(keys)} indices for a batch of {batch} samples")
    return keys


class FixedPointCache:
    """The last fixed point of each sample, keyed by its index in the data set (LRU-bounded).

    Example:
        >>> cache = eq.FixedPointCache(capacity=50_000)
        >>> for x, y, index in loader:
        ...     z = deq(x, z0=cache.initial(index, deq.initial_state(x)))
        ...     cache.store(index, z)

    Args:
        capacity: most samples kept; the least recently used are dropped first.
        device: where states are kept (default: the device of the stored state), e.g. "cpu" to
            spare accelerator memory.
    """

    def __init__(self, capacity: int = 10_000, device: torch.device | str | None = None) -> None:
        self.capacity = check_positive_int("FixedPointCache capacity", capacity)
        self.device = torch.device(device) if device is not None else None
        self._states: OrderedDict[int, torch.Tensor] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._states)

    def __contains__(self, index: int) -> bool:
        return index in self._states

    def clear(self) -> None:
        self._states.clear()

    def initial(self, indices: torch.Tensor | Sequence[int], default: State) -> State:
        """`default` (the batch's usual z0) with cached samples replaced by their fixed points."""
        layout = StateLayout.of(default, "default")
        flat = layout.flatten(default).clone()
        for row, key in enumerate(_as_keys(indices, layout.batch)):
            cached = self._states.get(key)
            if cached is None:
                self.misses += 1
                continue
            if cached.numel() != layout.features:
                raise ValueError(
                    f"the cached state of sample {key} has {cached.numel()} entries but this "
                    f"batch's state has {layout.features} per sample ({layout.describe()}); "
                    "clear() the cache when the model's state shape changes"
                )
            self._states.move_to_end(key)
            flat[row] = cached.to(device=flat.device, dtype=flat.dtype)
            self.hits += 1
        return layout.unflatten(flat)

    def store(self, indices: torch.Tensor | Sequence[int], z: State) -> None:
        """Keep each sample's state from `z` (detached) under its index."""
        layout = StateLayout.of(z, "z")
        flat = layout.flatten(z).detach()
        if self.device is not None:
            flat = flat.to(self.device)
        for row, key in enumerate(_as_keys(indices, layout.batch)):
            self._states[key] = flat[row].clone()
            self._states.move_to_end(key)
        while len(self._states) > self.capacity:
            self._states.popitem(last=False)
