"""The convolutional monotone cell on images, and its W as a splitting operator whose
resolvent is solved in the Fourier domain."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import check_positive_int
from .parametrization import DEFAULT_MARGIN, check_margin, conv_apply, fourier_weight
from .splitting import MonotoneCell, MonotoneSplitting


class ConvMonotoneOperator:
    """W = (1 - m) I - A^T A + B - B^T with A, B circular convolutions, on flat images of
    shape (channels, height, width).

    Circular convolutions are diagonalized by the 2-D DFT: per frequency W is a small
    channels x channels matrix, so (I + alpha (I - W))^{-1} is one FFT, height * width small
    solves (LU factors cached per step size) and one inverse FFT.
    """

    def __init__(self, a: torch.Tensor, b: torch.Tensor, m: float, height: int, width: int):
        self.a, self.b, self.m = a, b, check_margin(m)
        self.shape = (a.shape[1], height, width)
        self.features = math.prod(self.shape)
        self._factors: dict[float, tuple[torch.Tensor, torch.Tensor]] = {}

    def _image(self, v: torch.Tensor) -> torch.Tensor:
        return v.reshape(v.shape[0], *self.shape)

    def apply(self, v: torch.Tensor, transpose: bool = False) -> torch.Tensor:
        out = conv_apply(self._image(v), self.a, self.b, self.m, transpose=transpose)
        return out.reshape(v.shape[0], -1)

    def symbol(self) -> torch.Tensor:
        """W per frequency, shape (height, width, channels, channels)."""
        return fourier_weight(self.a, self.b, self.m, *self.shape[1:])

    def resolvent(self, v: torch.Tensor, alpha: float, transpose: bool = False) -> torch.Tensor:
        alpha = float(alpha)
        if alpha not in self._factors:
            w_hat = self.symbol()
            eye = torch.eye(self.shape[0], dtype=w_hat.dtype, device=w_hat.device)
            self._factors[alpha] = torch.linalg.lu_factor(eye + alpha * (eye - w_hat))
        lu, pivots = self._factors[alpha]
        v_hat = torch.fft.fft2(self._image(v)).permute(2, 3, 1, 0)  # (height, width, c, batch)
        # W^T is W^H per frequency (the DFT is unitary up to scale): `adjoint` solves with M^H
        x_hat = torch.linalg.lu_solve(lu, pivots, v_hat, adjoint=transpose)
        x = torch.fft.ifft2(x_hat.permute(3, 2, 0, 1)).real
        return x.reshape(v.shape[0], -1).to(v.dtype)

    def norm(self) -> torch.Tensor:
        w_hat = self.symbol()
        eye = torch.eye(self.shape[0], dtype=w_hat.dtype, device=w_hat.device)
        return torch.linalg.matrix_norm(eye - w_hat, ord=2).max()


class MonotoneConvCell(MonotoneCell):
    """f(z, x) = relu(W z + U x + b) on images, W = (1 - m) I - A^T A + B - B^T with A and B
    convolutions with circular padding (so A^T is the exact adjoint convolution).

    The state has x's height and width and `channels` channels. As for `MonotoneLinearCell`,
    the equilibrium is unique for every A and B; `splitting(x)` gives the splitting solvers
    their structure (the resolvent is an FFT-domain solve) and `equilibrium_map(x)` the map
    with it attached.

    Gradients: the adjoint's J = D W can have spectral radius above 1, where the damped
    fixed-point iteration (Implicit's default) diverges; use `eq.Implicit("gmres")` or
    `eq.Implicit("peaceman_rachford")` (the adjoint splitting, which converges for every A and
    B; it needs the forward map's splitting).

    Args:
        channels: channels of the state.
        input_channels: channels of the input x (default: channels).
        kernel_size: odd size of the convolutions A, B and U.
        m: monotonicity margin, > 0.
    """

    def __init__(
        self,
        channels: int,
        input_channels: int | None = None,
        kernel_size: int = 3,
        m: float = DEFAULT_MARGIN,
    ) -> None:
        super().__init__()
        check_positive_int("MonotoneConvCell channels", channels)
        if input_channels is not None:
            check_positive_int("MonotoneConvCell input_channels", input_channels)
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(
                f"kernel_size must be an odd positive integer (the circular padding keeps the "
                f"image size only for odd kernels), got {kernel_size!r}"
            )
        self.m = check_margin(m)
        self.channels = channels
        # A and B start as nn.Conv2d weights would (uniform, bound 1 / sqrt(fan_in))
        bound = 1 / math.sqrt(channels * kernel_size**2)
        shape = (channels, channels, kernel_size, kernel_size)
        self.a = nn.Parameter(torch.empty(shape).uniform_(-bound, bound))
        self.b = nn.Parameter(torch.empty(shape).uniform_(-bound, bound))
        self.inject = nn.Conv2d(
            channels if input_channels is None else input_channels,
            channels,
            kernel_size,
            padding=kernel_size // 2,
            padding_mode="circular",
        )

    def operator(self, height: int, width: int) -> ConvMonotoneOperator:
        return ConvMonotoneOperator(self.a, self.b, self.m, height, width)

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(conv_apply(z, self.a, self.b, self.m) + self.inject(x))

    def init_state(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.shape[0], self.channels, *x.shape[2:])

    def splitting(self, x: torch.Tensor) -> MonotoneSplitting:
        """The structure of `z -> self(z, x)` for the splitting solvers (flat coordinates)."""
        bias = self.inject(x).reshape(x.shape[0], -1)
        return MonotoneSplitting(self.operator(*x.shape[2:]), bias)
