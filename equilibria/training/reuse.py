"""Fixed-point reuse across epochs: each training example's last equilibrium is where its next
solve starts (`deq.reuse`).

The equilibrium does not depend on where a converged solve starts, so a start close to it only
saves evaluations. Two things make the stored point less close, never wrong: the weights have
moved since the last epoch, and with augmentation (`data.shift`, `data.flip`) the point belongs
to another view of the example. Test images have no stored point and start from the model's
usual start: a model whose training solves stop at their cap from a warm start has learnt on
states its test solves may not reach, so reuse is sound only where training solves converge
(the residual panel and warning of a run say whether they do). The stored points live in memory
and are not checkpointed: a resumed run starts its first epoch from the usual start.
"""

from __future__ import annotations

import torch

from ..state import State


class FixedPointStore:
    """The last fixed point of each of `size` training examples (held on `device`); an example
    without one starts from zeros (the start `deq.reuse` goes with: `deq.init=zeros`)."""

    def __init__(self, size: int, device: torch.device | str = "cpu") -> None:
        self.size, self.device = size, torch.device(device)
        self.parts: list[torch.Tensor] | None = None
        self.filled = torch.zeros(size, dtype=torch.bool, device=self.device)
        self.tuple_state = False

    def start(self, indices: torch.Tensor, device: torch.device) -> State | None:
        """The stored points of the examples `indices` as a batch on `device` (zeros for those
        without one), or None when none of them has one (the solve then starts as usual)."""
        indices = indices.to(self.device)
        if self.parts is None or not bool(self.filled[indices].any()):
            return None
        parts = tuple(part[indices].to(device) for part in self.parts)
        return parts if self.tuple_state else parts[0]

    def keep(self, indices: torch.Tensor, state: State) -> None:
        """Store `state` (a batch, one row per example of `indices`) as those examples' points."""
        parts = tuple(state) if isinstance(state, (tuple, list)) else (state,)
        if self.parts is None:
            self.tuple_state = isinstance(state, (tuple, list))
            self.parts = [
                torch.zeros((self.size, *p.shape[1:]), dtype=p.dtype, device=self.device)
                for p in parts
            ]
        indices = indices.to(self.device)
        for stored, part in zip(self.parts, parts, strict=True):
            stored[indices] = part.detach().to(self.device, stored.dtype)
        self.filled[indices] = True

    @property
    def nbytes(self) -> int:
        """Memory the stored points take."""
        return sum(p.numel() * p.element_size() for p in self.parts or ())
