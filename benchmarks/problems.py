"""The fixed-point problems every part measures: a tanh cell with slow modes and a conv cell.

A `Problem` holds a cell, an input batch and a fixed upstream gradient, built from a seed so that
both libraries (and every part) see identical weights, inputs and losses.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from equilibria.cells import ConvCell, TanhCell
from equilibria.errors import check_fraction, check_positive_int


@dataclass
class Problem:
    """A cell f(z, x), its input and the upstream gradient of the loss (z * upstream).sum()."""

    name: str
    description: str
    cell: nn.Module
    x: torch.Tensor
    upstream: torch.Tensor

    @property
    def batch(self) -> int:
        return self.x.shape[0]

    @property
    def features(self) -> int:
        """Entries of one sample's state."""
        return self.upstream[0].numel()

    def z0(self) -> torch.Tensor:
        """The initial state both libraries start from: zeros shaped like the state."""
        return torch.zeros_like(self.upstream)

    def f(self, z: torch.Tensor) -> torch.Tensor:
        return self.cell(z, self.x)

    def loss(self, z: torch.Tensor) -> torch.Tensor:
        return (z * self.upstream).sum()

    def parameter_gradient(self) -> torch.Tensor:
        """Every parameter's gradient, flattened into one vector (zeros where there is none)."""
        return torch.cat(
            [
                (p.grad if p.grad is not None else torch.zeros_like(p)).flatten()
                for p in self.cell.parameters()
            ]
        )

    def zero_grad(self) -> None:
        for p in self.cell.parameters():
            p.grad = None

    def to(self, device: torch.device, dtype: torch.dtype | None = None) -> Problem:
        """A copy on `device` (and in `dtype`), with its own copy of the cell."""
        cell = copy.deepcopy(self.cell).to(device=device, dtype=dtype)
        return Problem(
            self.name,
            self.description,
            cell,
            self.x.to(device=device, dtype=dtype),
            self.upstream.to(device=device, dtype=dtype),
        )


def slow_tanh(
    features: int = 256,
    batch: int = 64,
    *,
    top_eigenvalue: float = 0.99,
    input_scale: float = 0.3,
    seed: int = 0,
) -> Problem:
    """f(z, x) = tanh(W z + U x + b) with W symmetric, eigenvalues spread over [-0.5, top].

    The eigenvalues near `top_eigenvalue` are slow modes: plain iteration contracts them by
    about that factor per step. A small `input_scale` keeps tanh near its linear range, so the
    Jacobian at the fixed point keeps those modes.
    """
    check_positive_int("features", features)
    check_positive_int("batch", batch)
    check_fraction("top_eigenvalue", top_eigenvalue)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    cell = TanhCell(features)
    basis, _ = torch.linalg.qr(torch.randn(features, features, generator=gen, dtype=torch.float64))
    spectrum = torch.linspace(-0.5, top_eigenvalue, features, dtype=torch.float64)
    with torch.no_grad():
        cell.linear.weight.copy_(basis @ torch.diag(spectrum) @ basis.T)
        cell.inject.weight.mul_(input_scale)
    x = torch.randn(batch, features, generator=gen)
    upstream = torch.randn(batch, features, generator=gen) / batch
    return Problem(
        name=f"tanh d={features}",
        description=(
            f"tanh(W z + U x + b), d={features}, batch {batch}, W symmetric with eigenvalues "
            f"in [-0.5, {top_eigenvalue}], input scale {input_scale}"
        ),
        cell=cell,
        x=x,
        upstream=upstream,
    )


def conv(channels: int = 16, size: int = 8, batch: int = 64, *, seed: int = 0) -> Problem:
    """The residual conv cell `equilibria.cells.ConvCell` on `channels` x `size` x `size` maps."""
    check_positive_int("channels", channels)
    check_positive_int("size", size)
    check_positive_int("batch", batch)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    groups = 4 if channels % 4 == 0 else 1
    cell = ConvCell(channels, groups=groups)
    x = torch.randn(batch, channels, size, size, generator=gen)
    upstream = torch.randn(batch, channels, size, size, generator=gen) / batch
    return Problem(
        name=f"conv {channels}x{size}x{size}",
        description=(
            f"ConvCell: GroupNorm(relu(z + conv(relu(conv(z))) + x)), {channels} channels "
            f"(hidden {2 * channels}), {size}x{size} maps, batch {batch}"
        ),
        cell=cell,
        x=x,
        upstream=upstream,
    )


class CountingCell(nn.Module):
    """Wraps a cell and counts its forward calls and the backward passes through it.

    A backward pass is counted when a gradient flows into the cell's output (one
    vector-Jacobian product), whichever library asked for it.
    """

    def __init__(self, cell: nn.Module) -> None:
        super().__init__()
        self.cell = cell
        self.forward_calls = 0
        self.backward_passes = 0

    def reset(self) -> None:
        self.forward_calls = 0
        self.backward_passes = 0

    def _count_backward(self, grad: torch.Tensor) -> None:
        self.backward_passes += 1

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        self.forward_calls += 1
        out = self.cell(z, x)
        if out.requires_grad:
            out.register_hook(self._count_backward)
        return out

    def init_state(self, x: torch.Tensor) -> torch.Tensor:
        init = getattr(self.cell, "init_state", None)
        return init(x) if callable(init) else torch.zeros_like(x)
