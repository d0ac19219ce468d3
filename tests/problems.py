"""Fixed-point problems with known answers, shared by the tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

DOTTIE = 0.7390851332151607  # the fixed point of cos


@dataclass
class Problem:
    name: str
    f: Callable[[torch.Tensor], torch.Tensor]
    z0: torch.Tensor
    answer: torch.Tensor


def affine(
    dtype: torch.dtype, batch: int = 3, features: int = 12, norm: float = 0.8, slow: bool = False
) -> Problem:
    """z = A z + b with ||A|| = norm < 1: the answer is (I - A)^-1 b, per sample.

    With `slow`, A is symmetric with eigenvalues spread over [0, norm], so plain iteration
    crawls along the eigenvector whose eigenvalue is `norm`.
    """
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(features, features, generator=gen, dtype=torch.float64)
    if slow:
        q, _ = torch.linalg.qr(a)
        a = q @ torch.diag(torch.linspace(0, norm, features, dtype=torch.float64)) @ q.T
    else:
        a = a * (norm / torch.linalg.matrix_norm(a, ord=2))
    b = torch.randn(batch, features, generator=gen, dtype=torch.float64)
    answer = torch.linalg.solve(torch.eye(features, dtype=torch.float64) - a, b.T).T
    a, b = a.to(dtype), b.to(dtype)
    return Problem(
        "affine", lambda z: z @ a.T + b, torch.zeros(batch, features, dtype=dtype), answer.to(dtype)
    )


def cosine(dtype: torch.dtype, batch: int = 4) -> Problem:
    """z = cos(z) elementwise: the Dottie number."""
    z0 = torch.linspace(-1.0, 2.0, batch * 2, dtype=dtype).reshape(batch, 2)
    return Problem("cos", torch.cos, z0, torch.full_like(z0, DOTTIE))


def tanh_network(dtype: torch.dtype, batch: int = 5, features: int = 16) -> Problem:
    """z = tanh(W z + x) with ||W|| = 0.9; the answer comes from a long float64 Picard run."""
    gen = torch.Generator().manual_seed(2)
    w = torch.randn(features, features, generator=gen, dtype=torch.float64)
    w = w * (0.9 / torch.linalg.matrix_norm(w, ord=2))
    x = torch.randn(batch, features, generator=gen, dtype=torch.float64)
    z = torch.zeros_like(x)
    for _ in range(2000):
        z = torch.tanh(z @ w.T + x)
    w, x = w.to(dtype), x.to(dtype)
    return Problem("tanh", lambda z: torch.tanh(z @ w.T + x), torch.zeros_like(x), z.to(dtype))


PROBLEMS = {"affine": affine, "cos": cosine, "tanh": tanh_network}


def dense_ift_gradients(
    f: Callable[[torch.Tensor], torch.Tensor],
    z_star: torch.Tensor,
    upstream: torch.Tensor,
    inputs: tuple[torch.Tensor, ...],
) -> tuple[torch.Tensor, ...]:
    """d<upstream, z*>/d inputs by the implicit function theorem with one dense Jacobian.

    `f` maps a `(batch, features)` matrix to one and closes over `inputs`; the whole batch is
    one system (I - J) here, so nothing assumes that samples are independent.
    """
    z = z_star.detach()
    n = z.numel()
    jac = torch.autograd.functional.jacobian(f, z).reshape(n, n)
    adjoint = torch.linalg.solve((torch.eye(n, dtype=z.dtype) - jac).T, upstream.reshape(n))
    with torch.enable_grad():
        return torch.autograd.grad(f(z), inputs, adjoint.reshape(z.shape))
