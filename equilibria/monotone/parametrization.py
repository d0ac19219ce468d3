"""The monotone parametrization W = (1 - m) I - A^T A + B - B^T, dense and convolutional.

For every A and B the symmetric part of I - W is m I + A^T A >= m I (B - B^T is skew), so the
operator z -> (I - W) z - c is m-strongly monotone and the equilibrium z = relu(W z + c) exists
and is unique.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

DEFAULT_MARGIN = 0.05  # the monotonicity margin m of Winston & Kolter's experiments


def check_margin(m: float) -> float:
    """m as a float, or a ValueError: the margin must be a finite number > 0."""
    if isinstance(m, bool) or not isinstance(m, (int, float)) or not math.isfinite(m) or m <= 0:
        raise ValueError(f"the monotonicity margin m must be a finite number > 0, got {m!r}")
    return float(m)


def dense_weight(a: torch.Tensor, b: torch.Tensor, m: float) -> torch.Tensor:
    """The d x d matrix W = (1 - m) I - A^T A + B - B^T."""
    eye = torch.eye(a.shape[1], dtype=a.dtype, device=a.device)
    return (1 - m) * eye - a.T @ a + b - b.T


def dense_apply(z: torch.Tensor, a: torch.Tensor, b: torch.Tensor, m: float) -> torch.Tensor:
    """W z for each row z of a (batch, d) matrix, without forming W (O(d^2) per row)."""
    return (1 - m) * z - (z @ a.T) @ a + z @ b.T - z @ b


def circular_conv(u: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The convolution K u on the torus: stride 1, odd kernel, circular padding (same size)."""
    pad = weight.shape[-1] // 2
    return F.conv2d(F.pad(u, (pad, pad, pad, pad), mode="circular"), weight)


def circular_conv_adjoint(v: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """K^T v, the exact adjoint of `circular_conv` (<K u, v> = <u, K^T v>).

    A transposed convolution with the same weights computes the adjoint of a convolution with
    zero padding; on the torus its overhanging border wraps around, which is the same as a
    circular convolution with the kernel flipped in space and its channels swapped.
    """
    return circular_conv(v, weight.flip(-1, -2).transpose(0, 1))


def conv_apply(
    z: torch.Tensor, a: torch.Tensor, b: torch.Tensor, m: float, *, transpose: bool = False
) -> torch.Tensor:
    """W z (or W^T z) for images z (batch, channels, height, width), A and B circular convs."""
    skew = circular_conv(z, b) - circular_conv_adjoint(z, b)
    gram = circular_conv_adjoint(circular_conv(z, a), a)
    return (1 - m) * z - gram + (-skew if transpose else skew)


def fourier_symbol(weight: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The circular convolution by `weight` (out, in, k, k) in the 2-D DFT basis.

    Returns K^(f) of shape (height, width, out, in) with fft2(K u)(f) = K^(f) fft2(u)(f) for
    every frequency f: a tap at offset s multiplies by exp(+2 pi i f s / n), the conjugate of
    the DFT of a delta at s.
    """
    k = weight.shape[-1]
    grid = weight.new_zeros(*weight.shape[:2], height, width)
    for p in range(k):  # taps that wrap onto the same cell (grid smaller than kernel) add up
        for q in range(k):
            grid[:, :, (p - k // 2) % height, (q - k // 2) % width] += weight[:, :, p, q]
    return torch.fft.fft2(grid).conj().permute(2, 3, 0, 1)


def fourier_weight(
    a: torch.Tensor, b: torch.Tensor, m: float, height: int, width: int
) -> torch.Tensor:
    """W in the DFT basis: per frequency the channels x channels matrix
    (1 - m) I - A^H A + B - B^H, shape (height, width, channels, channels)."""
    a_hat = fourier_symbol(a, height, width)
    b_hat = fourier_symbol(b, height, width)
    eye = torch.eye(a.shape[1], dtype=a_hat.dtype, device=a.device)
    return (1 - m) * eye - a_hat.mH @ a_hat + b_hat - b_hat.mH
