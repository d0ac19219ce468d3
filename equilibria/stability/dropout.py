"""Variational dropout for cells: one mask per DEQ forward solve, shared by every iteration.

Ordinary dropout draws a new mask at every call, so inside a fixed-point solve the map changes
from one iteration to the next and there is no fixed point to find. A variational dropout module
draws its mask at its first application inside `masks_held(...)` (which `eq.DEQ` enters on every
call) and reuses it until the block ends; the next forward draws a new one. Outside such a block
each call draws a fresh mask. In eval mode, or with p = 0, the module is the identity.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..errors import check_fraction


class VariationalDropout(nn.Module):
    """Base class: zeroes whole features of a sample with probability `p`, scaling the rest by
    1 / (1 - p). Subclasses say which dimensions share one draw (`mask_shape`)."""

    expects: str = ""

    def __init__(self, p: float = 0.1) -> None:
        super().__init__()
        self.p = check_fraction(f"{type(self).__name__} p", p, allow_zero=True)
        self._mask: torch.Tensor | None = None
        self._holds = 0

    def mask_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        """The shape of one mask for input `x` (broadcast over the remaining dimensions)."""
        raise NotImplementedError

    def new_mask(self, x: torch.Tensor) -> torch.Tensor:
        """A fresh mask for `x`: 0 with probability p, else 1 / (1 - p); x's device and dtype."""
        mask = torch.empty(self.mask_shape(x), dtype=x.dtype, device=x.device)
        if self.p == 1.0:
            return mask.zero_()
        return mask.bernoulli_(1.0 - self.p).div_(1.0 - self.p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if not self._holds:
            return x * self.new_mask(x)
        if self._mask is None:
            self._mask = self.new_mask(x)
        elif self._mask.shape != self.mask_shape(x):
            raise ValueError(
                f"{type(self).__name__} was applied to inputs of different shapes within one "
                f"forward solve (mask {tuple(self._mask.shape)}, now input {tuple(x.shape)}); "
                "use one dropout module per input shape"
            )
        return x * self._mask

    def hold(self) -> None:
        """Start (or nest) a block in which one mask is reused; the outermost start clears it."""
        if not self._holds:
            self._mask = None
        self._holds += 1

    def release(self) -> None:
        """End a block; the outermost end drops the mask."""
        self._holds = max(self._holds - 1, 0)
        if not self._holds:
            self._mask = None

    def extra_repr(self) -> str:
        return f"p={self.p}"


class VariationalDropout1d(VariationalDropout):
    """One draw per feature: input (batch, features) or (batch, channels, length), the mask
    shared along the length."""

    expects = "(batch, features) or (batch, channels, length)"

    def mask_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        if x.dim() not in (2, 3):
            raise ValueError(
                f"VariationalDropout1d expects input of shape {self.expects}, "
                f"got shape {tuple(x.shape)}"
            )
        return tuple(x.shape[:2]) + (1,) * (x.dim() - 2)


class VariationalDropout2d(VariationalDropout):
    """One draw per channel: input (batch, channels, height, width), the mask shared over
    the spatial positions."""

    expects = "(batch, channels, height, width)"

    def mask_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        if x.dim() != 4:
            raise ValueError(
                f"VariationalDropout2d expects input of shape {self.expects}, "
                f"got shape {tuple(x.shape)}"
            )
        return (x.shape[0], x.shape[1], 1, 1)


@contextmanager
def masks_held(module: nn.Module) -> Iterator[None]:
    """Within the block, every `VariationalDropout` in `module` reuses one mask per module."""
    layers = [m for m in module.modules() if isinstance(m, VariationalDropout)]
    for layer in layers:
        layer.hold()
    try:
        yield
    finally:
        for layer in layers:
            layer.release()
