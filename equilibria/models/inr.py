"""Implicit neural representations: coordinate networks that map a pixel position to its colour.

`DEQINR` makes the hidden state a fixed point, z* = sin(c W z* + U gamma(p) + b), with Fourier
features gamma(p) of the coordinate p, a sine nonlinearity (as in SIREN) and a spectrally
normalized W, so the cell is a contraction with Lipschitz constant at most c < 1 and the fixed
point is unique. `FourierMLP` is the explicit counterpart: the same encoding followed by a stack
of sine layers; `FourierMLP.matching` sizes it to a given parameter count.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..backward import Backward
from ..deq import DEQ, DEQStats
from ..errors import check_fraction, check_nonnegative, check_positive_int
from ..stability.normalization import spectral_norm
from ..state import State


def _sine_init(layer: nn.Linear) -> nn.Linear:
    """SIREN's hidden-layer initialization: U(-sqrt(6 / fan_in), sqrt(6 / fan_in)).

    With inputs spread over [-1, 1] the pre-activations then have about unit variance, so the
    sine works on a few of its periods rather than in its linear range.
    """
    bound = math.sqrt(6.0 / layer.in_features)
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound)
        if layer.bias is not None:
            layer.bias.uniform_(-math.pi, math.pi)
    return layer


class FourierFeatures(nn.Module):
    """gamma(p) = [sin(2 pi B p), cos(2 pi B p)] with fixed Gaussian frequencies B ~ N(0, scale^2).

    B is a buffer (saved with the model, never trained), drawn from its own generator seeded by
    `seed`, so the encoding does not depend on the global random state.
    """

    def __init__(
        self, in_features: int = 2, frequencies: int = 64, scale: float = 10.0, seed: int = 0
    ) -> None:
        super().__init__()
        check_positive_int("in_features", in_features)
        check_positive_int("frequencies", frequencies)
        if check_nonnegative("scale", scale) == 0:
            raise ValueError("scale must be > 0 (the standard deviation of the frequencies)")
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer(
            "frequencies", scale * torch.randn(frequencies, in_features, generator=generator)
        )

    @property
    def out_features(self) -> int:
        return 2 * self.frequencies.shape[0]

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        angles = 2 * math.pi * coords @ self.frequencies.T
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class SineCell(nn.Module):
    """f(z, u) = sin(c W z + u) with W spectrally normalized: Lipschitz in z at most c.

    The normalized W is computed once per DEQ call (see `eq.spectral_norm`).
    """

    def __init__(self, width: int, contraction: float = 0.9) -> None:
        super().__init__()
        self.contraction = check_fraction("contraction", contraction)
        if self.contraction >= 1:
            raise ValueError(f"contraction must be < 1 for a unique fixed point, got {contraction}")
        linear = nn.Linear(width, width, bias=False)
        # all singular values equal: the recurrence acts in every direction, not only the top one
        nn.init.orthogonal_(linear.weight)
        self.linear = spectral_norm(linear)

    def forward(self, z: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        # c is folded into the (small) weight and u added inside the product: one pass over z
        weight = self.contraction * self.linear.weight
        return torch.sin(torch.addmm(u, z, weight.T))


def _check_coords(coords: Any, in_features: int) -> None:
    if not isinstance(coords, torch.Tensor) or coords.dim() != 2 or coords.shape[1] != in_features:
        shape = tuple(coords.shape) if isinstance(coords, torch.Tensor) else type(coords).__name__
        raise ValueError(
            f"coords must be a (points, {in_features}) tensor of coordinates, got {shape}"
        )


class DEQINR(nn.Module):
    """A coordinate network whose hidden state is a fixed point (after the (Implicit)^2 paper).

    rgb = head(z*), z* = sin(c W z* + U gamma(p) + b) for coordinates p of shape (points, 2).
    Pass the previous call's detached state as `z0` (see `equilibrium`) to start each solve from
    the last fixed point: after a small parameter update it is nearly the new one.

    Args:
        width: hidden features per coordinate.
        frequencies: Fourier frequencies (the encoding has twice as many features).
        scale: standard deviation of the frequencies (higher: finer detail, more noise).
        contraction: c, the bound on the cell's Lipschitz constant (< 1).
        solver, tol, max_iter, backward, **deq_options: the `eq.DEQ` settings. Plain
            iteration is the default: the cell contracts, and with tens of thousands of
            coordinates per call Anderson's per-sample least squares cost more than they save.
    """

    def __init__(
        self,
        width: int = 128,
        frequencies: int = 64,
        *,
        scale: float = 10.0,
        contraction: float = 0.9,
        in_features: int = 2,
        out_features: int = 3,
        solver: str = "picard",
        tol: float = 1e-3,
        max_iter: int = 40,
        backward: str | Backward = "implicit",
        seed: int = 0,
        **deq_options: Any,
    ) -> None:
        super().__init__()
        check_positive_int("width", width)
        check_positive_int("out_features", out_features)
        self.encoding = FourierFeatures(in_features, frequencies, scale, seed)
        self.inject = _sine_init(nn.Linear(self.encoding.out_features, width))
        options = dict(patience=None, on_failure="ignore", check_input=False)
        options.update(deq_options)
        self.deq = DEQ(
            SineCell(width, contraction),
            solver,
            tol=tol,
            max_iter=max_iter,
            backward=backward,
            **options,
        )
        self.head = nn.Linear(width, out_features)

    @property
    def width(self) -> int:
        return self.head.in_features

    @property
    def stats(self) -> DEQStats | None:
        """Statistics of the last solve (`eq.DEQStats`)."""
        return self.deq.stats

    def injection(self, coords: torch.Tensor) -> torch.Tensor:
        """U gamma(p) + b: the cell's input, computed once per call."""
        _check_coords(coords, self.encoding.frequencies.shape[1])
        return self.inject(self.encoding(coords))

    def equilibrium(self, coords: torch.Tensor, z0: State | None = None, **call: Any) -> State:
        """z* for each coordinate (differentiable), solved from `z0` (zeros when None).

        `call` takes the per-call overrides of `eq.DEQ` (solver, tol, max_iter, on_failure).
        """
        u = self.injection(coords)
        if z0 is not None and (not isinstance(z0, torch.Tensor) or z0.shape != u.shape):
            shape = tuple(z0.shape) if isinstance(z0, torch.Tensor) else type(z0).__name__
            raise ValueError(
                f"z0 must be a {tuple(u.shape)} state (points, width), got {shape}; pass the "
                "detached state of an earlier call on the same coordinates"
            )
        return self.deq(u, z0=z0, **call)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The colour of each coordinate from its hidden state."""
        return self.head(z)

    def forward(self, coords: torch.Tensor, z0: State | None = None, **call: Any) -> torch.Tensor:
        return self.decode(self.equilibrium(coords, z0, **call))


class FourierMLP(nn.Module):
    """The explicit baseline: gamma(p), then `depth` sine layers of `width`, then a linear head."""

    def __init__(
        self,
        width: int = 128,
        frequencies: int = 64,
        *,
        depth: int = 3,
        scale: float = 10.0,
        in_features: int = 2,
        out_features: int = 3,
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_positive_int("width", width)
        check_positive_int("depth", depth)
        self.encoding = FourierFeatures(in_features, frequencies, scale, seed)
        sizes = [self.encoding.out_features] + [width] * depth
        self.layers = nn.ModuleList(
            _sine_init(nn.Linear(a, b)) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.head = nn.Linear(width, out_features)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        _check_coords(coords, self.encoding.frequencies.shape[1])
        h = self.encoding(coords)
        for layer in self.layers:
            h = torch.sin(layer(h))
        return self.head(h)

    @staticmethod
    def parameters_for(
        width: int, frequencies: int, depth: int, in_out: tuple[int, int] = (2, 3)
    ) -> int:
        """Trainable parameters of a `FourierMLP` of these sizes."""
        encoded, out = 2 * frequencies, in_out[1]
        return (encoded + 1) * width + (depth - 1) * (width + 1) * width + (width + 1) * out

    @classmethod
    def matching(
        cls, parameters: int, frequencies: int, *, depth: int = 3, **options: Any
    ) -> FourierMLP:
        """The `FourierMLP` of `depth` layers whose parameter count is closest to `parameters`."""
        check_positive_int("parameters", parameters)
        out = options.get("out_features", 3)
        best = min(
            range(1, 4096),
            key=lambda w: abs(cls.parameters_for(w, frequencies, depth, (2, out)) - parameters),
        )
        return cls(best, frequencies, depth=depth, **options)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (a spectrally normalized weight counts once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
