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
        self.solve_calls = 0  # the forward calls made without autograd (a forward solve's)
        self.backward_passes = 0

    def reset(self) -> None:
        self.forward_calls = 0
        self.solve_calls = 0
        self.backward_passes = 0

    def _count_backward(self, grad: torch.Tensor) -> None:
        self.backward_passes += 1

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        self.forward_calls += 1
        self.solve_calls += not torch.is_grad_enabled()
        out = self.cell(z, x)
        if out.requires_grad:
            out.register_hook(self._count_backward)
        return out

    def init_state(self, x: torch.Tensor) -> torch.Tensor:
        init = getattr(self.cell, "init_state", None)
        return init(x) if callable(init) else torch.zeros_like(x)


class FlatMDEQCell(nn.Module):
    """The MDEQ cell on one flat state per sample, so that both libraries solve the same tensor.

    The state (batch, sum of branch sizes) is split into the branches' maps, passed through
    `equilibria.models.MDEQCell` and flattened back.
    """

    def __init__(self, cell: nn.Module, shapes: list[tuple[int, int, int]]) -> None:
        super().__init__()
        self.cell = cell
        self.shapes = shapes
        self.sizes = [c * h * w for c, h, w in shapes]

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        parts = z.split(self.sizes, dim=1)
        state = tuple(p.view(z.shape[0], *s) for p, s in zip(parts, self.shapes, strict=True))
        return torch.cat([b.flatten(1) for b in self.cell(state, x)], dim=1)

    def init_state(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.shape[0], sum(self.sizes))


def mdeq(
    channels: tuple[int, ...] = (24, 24), size: int = 8, batch: int = 32, *, seed: int = 0
) -> Problem:
    """The multiscale DEQ's cell (the default `equilibria train` widths) on a random injection.

    The cell is `equilibria.models.MDEQCell` with plain convolutions (no weight normalization,
    no dropout), its resolutions flattened into one state per sample.
    """
    from equilibria.models import MDEQCell
    from equilibria.models.blocks import branch_sizes

    check_positive_int("size", size)
    check_positive_int("batch", batch)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    inner = MDEQCell(channels, groups=4)
    sizes = branch_sizes(size, size, len(channels))
    shapes = [(c, h, w) for c, (h, w) in zip(channels, sizes, strict=True)]
    cell = FlatMDEQCell(inner, shapes)
    features = sum(cell.sizes)
    x = torch.randn(batch, channels[0], size, size, generator=gen)
    upstream = torch.randn(batch, features, generator=gen) / batch
    widths = "+".join(str(c) for c in channels)
    grids = ", ".join(f"{h}x{w}" for _, h, w in shapes)
    return Problem(
        name=f"mdeq {widths}ch {size}x{size}",
        description=(
            f"the MDEQ cell (branch blocks + multiscale fusion), channels {list(channels)} at "
            f"{grids}, flattened to {features} features per sample, batch {batch}"
        ),
        cell=cell,
        x=x,
        upstream=upstream,
    )
