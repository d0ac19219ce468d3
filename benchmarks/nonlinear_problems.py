"""Classic test problems for nonlinear equations F(x) = 0, each posed as a fixed point z = f(z).

Every function maps `(batch, n)` float64 tensors to `(batch, n)` tensors. Sources:

- MGH: J. J. Moré, B. S. Garbow and K. E. Hillstrom, "Testing unconstrained optimization
  software", ACM TOMS 7 (1981) 17-41, in the square form of the MINPACK-1 test set
  (Moré, Garbow, Hillstrom, "User guide for MINPACK-1", ANL-80-74, 1980). Their fixed-point
  map is f(z) = z - F(z), so the residual f(z) - z is -F(z).
- Kelley: C. T. Kelley, "Iterative Methods for Linear and Nonlinear Equations" (SIAM, 1995)
  and "Solving Nonlinear Equations with Iterative Methods" (SIAM, 2022): the Chandrasekhar
  H-equation in its own fixed-point form, and the convection-diffusion equation
  -Laplace(u) + C u (u_x + u_y) = g preconditioned by the inverse Laplacian.
- Bratu: -u'' = lambda exp(u) on (0, 1) with u = 0 at both ends, preconditioned likewise.
- Non-contractive tanh maps f(z) = tanh(W z + x), W with spectral radius above 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

Map = Callable[[torch.Tensor], torch.Tensor]
DTYPE = torch.float64


@dataclass(frozen=True)
class EquationProblem:
    """F(x) = 0 as its source writes it, with a fixed-point map f whose fixed points are its roots.

    Attributes:
        name: the problem's name (with its parameter where it has one).
        source: "MGH", "Kelley", "Bratu" or "tanh map".
        equation: F(x) as the source defines it.
        fixed_point_map: f(z); f(z) - z is -F(z), or -P F(z) for a fixed preconditioner P.
        start: the source's starting point, shape (n,).
        start_text: that starting point in words.
    """

    name: str
    source: str
    equation: Map
    fixed_point_map: Map
    start: torch.Tensor
    start_text: str

    @property
    def size(self) -> int:
        return self.start.numel()

    def x0(self) -> torch.Tensor:
        """The starting point as a batch of one, shape (1, n)."""
        return self.start.unsqueeze(0).clone()

    def residual(self, z: torch.Tensor) -> torch.Tensor:
        """z - f(z): the quantity both libraries drive to zero (up to its sign)."""
        return z - self.fixed_point_map(z)


def _from_equation(name: str, equation: Map, start: torch.Tensor, start_text: str):
    """An MGH problem: f(z) = z - F(z)."""
    return EquationProblem(name, "MGH", equation, lambda z: z - equation(z), start, start_text)


def interior_grid(n: int) -> tuple[float, torch.Tensor]:
    """h = 1 / (n + 1) and the interior points t_i = i h, i = 1..n."""
    h = 1.0 / (n + 1)
    return h, h * torch.arange(1, n + 1, dtype=DTYPE)


def _neighbours(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x_{i-1} and x_{i+1}, with zeros beyond both ends."""
    padded = torch.nn.functional.pad(x, (1, 1))
    return padded[:, :-2], padded[:, 2:]


def discrete_boundary_value(n: int = 100) -> EquationProblem:
    """MGH 28: 2 x_i - x_{i-1} - x_{i+1} + h^2 (x_i + t_i + 1)^3 / 2, x0_i = t_i (t_i - 1)."""
    h, t = interior_grid(n)

    def equation(x: torch.Tensor) -> torch.Tensor:
        before, after = _neighbours(x)
        return 2 * x - before - after + h**2 * (x + t + 1) ** 3 / 2

    return _from_equation("discrete boundary value", equation, t * (t - 1), "t_i (t_i - 1)")


def discrete_integral_equation(n: int = 100) -> EquationProblem:
    """MGH 29: x_i + h/2 [(1 - t_i) sum_{j<=i} t_j c_j + t_i sum_{j>i} (1 - t_j) c_j],
    c_j = (x_j + t_j + 1)^3; x0_i = t_i (t_i - 1)."""
    h, t = interior_grid(n)

    def equation(x: torch.Tensor) -> torch.Tensor:
        cube = (x + t + 1) ** 3
        up_to = torch.cumsum(t * cube, dim=1)
        weighted = (1 - t) * cube
        beyond = weighted.sum(dim=1, keepdim=True) - torch.cumsum(weighted, dim=1)
        return x + h / 2 * ((1 - t) * up_to + t * beyond)

    return _from_equation("discrete integral equation", equation, t * (t - 1), "t_i (t_i - 1)")


def broyden_tridiagonal(n: int = 500) -> EquationProblem:
    """MGH 30: (3 - 2 x_i) x_i - x_{i-1} - 2 x_{i+1} + 1, x0 = -1."""

    def equation(x: torch.Tensor) -> torch.Tensor:
        before, after = _neighbours(x)
        return (3 - 2 * x) * x - before - 2 * after + 1

    return _from_equation("Broyden tridiagonal", equation, -torch.ones(n, dtype=DTYPE), "-1")


BANDED_LOWER, BANDED_UPPER = 5, 1


def broyden_banded(n: int = 500) -> EquationProblem:
    """MGH 31: x_i (2 + 5 x_i^2) + 1 - sum_{j in J_i} x_j (1 + x_j), J_i = {i-5..i+1} \\ {i}
    within 1..n; x0 = -1."""

    def equation(x: torch.Tensor) -> torch.Tensor:
        terms = torch.nn.functional.pad(x * (1 + x), (BANDED_LOWER, BANDED_UPPER))
        offsets = [o for o in range(-BANDED_LOWER, BANDED_UPPER + 1) if o != 0]
        band = sum(terms[:, BANDED_LOWER + o : BANDED_LOWER + o + n] for o in offsets)
        return x * (2 + 5 * x**2) + 1 - band

    return _from_equation("Broyden banded", equation, -torch.ones(n, dtype=DTYPE), "-1")


def trigonometric(n: int = 100) -> EquationProblem:
    """MGH 26: n - sum_j cos x_j + i (1 - cos x_i) - sin x_i, x0 = 1/n (a root: x = 0)."""
    index = torch.arange(1, n + 1, dtype=DTYPE)

    def equation(x: torch.Tensor) -> torch.Tensor:
        cosines = torch.cos(x)
        return n - cosines.sum(dim=1, keepdim=True) + index * (1 - cosines) - torch.sin(x)

    return _from_equation("trigonometric", equation, torch.full((n,), 1 / n, dtype=DTYPE), "1/n")


def extended_rosenbrock(n: int = 1000) -> EquationProblem:
    """MGH 21 (n even): 10 (x_{2i} - x_{2i-1}^2) and 1 - x_{2i-1}; x0 = (-1.2, 1, ...), root 1."""
    if n % 2:
        raise ValueError(f"the extended Rosenbrock function needs an even n, not {n}")

    def equation(x: torch.Tensor) -> torch.Tensor:
        odd, even = x[:, 0::2], x[:, 1::2]
        return torch.stack([10 * (even - odd**2), 1 - odd], dim=2).reshape(x.shape)

    start = torch.tensor([-1.2, 1.0], dtype=DTYPE).repeat(n // 2)
    return _from_equation("extended Rosenbrock", equation, start, "(-1.2, 1, -1.2, 1, ...)")


def extended_powell_singular(n: int = 100) -> EquationProblem:
    """MGH 22 (n divisible by 4), per block (a, b, c, d): a + 10 b, sqrt(5) (c - d),
    (b - 2 c)^2, sqrt(10) (a - d)^2; x0 = (3, -1, 0, 1, ...); root 0, where J is singular."""
    if n % 4:
        raise ValueError(f"the extended Powell singular function needs n divisible by 4, not {n}")

    def equation(x: torch.Tensor) -> torch.Tensor:
        a, b, c, d = x.reshape(x.shape[0], n // 4, 4).unbind(dim=2)
        blocks = [a + 10 * b, 5**0.5 * (c - d), (b - 2 * c) ** 2, 10**0.5 * (a - d) ** 2]
        return torch.stack(blocks, dim=2).reshape(x.shape)

    start = torch.tensor([3.0, -1.0, 0.0, 1.0], dtype=DTYPE).repeat(n // 4)
    return _from_equation("extended Powell singular", equation, start, "(3, -1, 0, 1, ...)")


def variably_dimensioned(n: int = 50) -> EquationProblem:
    """MGH 25 as MINPACK-1 poses it square: x_i - 1 + i s (1 + 2 s^2), s = sum_j j (x_j - 1);
    x0_j = 1 - j/n; root 1."""
    index = torch.arange(1, n + 1, dtype=DTYPE)

    def equation(x: torch.Tensor) -> torch.Tensor:
        s = ((x - 1) * index).sum(dim=1, keepdim=True)
        return x - 1 + index * s * (1 + 2 * s**2)

    return _from_equation("variably dimensioned", equation, 1 - index / n, "1 - j/n")


def brown_almost_linear(n: int = 50) -> EquationProblem:
    """MGH 27: x_i + sum_j x_j - (n + 1) for i < n, prod_j x_j - 1 for i = n; x0 = 1/2, root 1."""

    def equation(x: torch.Tensor) -> torch.Tensor:
        linear = x[:, :-1] + x.sum(dim=1, keepdim=True) - (n + 1)
        return torch.cat([linear, x.prod(dim=1, keepdim=True) - 1], dim=1)

    return _from_equation(
        "Brown almost-linear", equation, torch.full((n,), 0.5, dtype=DTYPE), "1/2"
    )


def chandrasekhar_nodes(n: int) -> torch.Tensor:
    """The composite midpoint rule's nodes mu_i = (i - 1/2) / n on [0, 1]."""
    return (torch.arange(1, n + 1, dtype=DTYPE) - 0.5) / n


def chandrasekhar(c: float, n: int = 200) -> EquationProblem:
    """Kelley's discrete H-equation: f(h)_i = 1 / (1 - c/(2n) sum_j mu_i h_j / (mu_i + mu_j)),
    F(h) = h - f(h), h0 = 1. Solvable for 0 < c <= 1; its Jacobian is singular at c = 1."""
    mu = chandrasekhar_nodes(n)
    kernel = (c / (2 * n)) * mu[:, None] / (mu[:, None] + mu[None, :])

    def fixed_point_map(h: torch.Tensor) -> torch.Tensor:
        return 1 / (1 - h @ kernel.T)

    return EquationProblem(
        f"Chandrasekhar H (c = {c:g})",
        "Kelley",
        lambda h: h - fixed_point_map(h),
        fixed_point_map,
        torch.ones(n, dtype=DTYPE),
        "1",
    )


def sine_basis(m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The orthonormal eigenvectors S (symmetric, S S = I) and eigenvalues of the 1-d
    Dirichlet Laplacian tridiag(-1, 2, -1) / h^2 on m interior points."""
    h = 1.0 / (m + 1)
    k = torch.arange(1, m + 1, dtype=DTYPE)
    basis = math.sqrt(2 * h) * torch.sin(math.pi * h * k[:, None] * k[None, :])
    eigenvalues = (4 / h**2) * torch.sin(math.pi * h * k / 2) ** 2
    return basis, eigenvalues


def convection_exact(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Kelley's manufactured solution u = 10 x y (1 - x) (1 - y) exp(x^4.5)."""
    return 10 * x * y * (1 - x) * (1 - y) * torch.exp(x**4.5)


def _convection_forcing(x: torch.Tensor, y: torch.Tensor, convection: float) -> torch.Tensor:
    """g = -Laplace(u) + C u (u_x + u_y) for the exact u, pointwise by automatic derivatives."""

    def at(point: torch.Tensor) -> torch.Tensor:
        value = convection_exact(point[0], point[1])
        gradient = torch.func.grad(lambda p: convection_exact(p[0], p[1]))(point)
        hessian = torch.func.hessian(lambda p: convection_exact(p[0], p[1]))(point)
        return -torch.trace(hessian) + convection * value * gradient.sum()

    points = torch.stack([x.reshape(-1), y.reshape(-1)], dim=1)
    return torch.func.vmap(at)(points).reshape(x.shape)


def convection_diffusion(m: int = 31, convection: float = 20.0) -> EquationProblem:
    """Kelley's -Laplace(u) + C u (u_x + u_y) = g on the unit square, u = 0 on its edge, with
    central differences on an m x m interior grid (n = m^2, x index first) and g from the exact
    solution `convection_exact`. F(u) = A u + C u (D_x u + D_y u) - g, A the 5-point negative
    Laplacian; f(u) = A^-1 (g - C u (D_x u + D_y u)) (fast-Poisson preconditioning); u0 = 0."""
    h, t = interior_grid(m)
    grid_x, grid_y = torch.meshgrid(t, t, indexing="ij")
    forcing = _convection_forcing(grid_x, grid_y, convection)
    basis, eigenvalues = sine_basis(m)
    inverse_eigenvalues = 1 / (eigenvalues[:, None] + eigenvalues[None, :])

    def squares(u: torch.Tensor) -> torch.Tensor:
        return u.reshape(u.shape[0], m, m)

    def convection_term(grid: torch.Tensor) -> torch.Tensor:
        padded = torch.nn.functional.pad(grid, (1, 1, 1, 1))
        u_x = (padded[:, 2:, 1:-1] - padded[:, :-2, 1:-1]) / (2 * h)
        u_y = (padded[:, 1:-1, 2:] - padded[:, 1:-1, :-2]) / (2 * h)
        return convection * grid * (u_x + u_y)

    def laplacian(grid: torch.Tensor) -> torch.Tensor:
        padded = torch.nn.functional.pad(grid, (1, 1, 1, 1))
        neighbours = (
            padded[:, 2:, 1:-1] + padded[:, :-2, 1:-1] + padded[:, 1:-1, 2:] + padded[:, 1:-1, :-2]
        )
        return (4 * grid - neighbours) / h**2

    def poisson_solve(grid: torch.Tensor) -> torch.Tensor:
        return basis @ ((basis @ grid @ basis) * inverse_eigenvalues) @ basis

    def equation(u: torch.Tensor) -> torch.Tensor:
        grid = squares(u)
        return (laplacian(grid) + convection_term(grid) - forcing).reshape(u.shape)

    def fixed_point_map(u: torch.Tensor) -> torch.Tensor:
        grid = squares(u)
        return poisson_solve(forcing - convection_term(grid)).reshape(u.shape)

    return EquationProblem(
        f"convection-diffusion (C = {convection:g})",
        "Kelley",
        equation,
        fixed_point_map,
        torch.zeros(m * m, dtype=DTYPE),
        "0",
    )


def bratu_exact(x: torch.Tensor, lam: float) -> torch.Tensor:
    """The lower-branch solution -2 log(cosh((x - 1/2) theta/2) / cosh(theta/4)) of -u'' =
    lam exp(u), with theta the smaller root of theta = sqrt(2 lam) cosh(theta/4)."""
    theta = 0.0
    for _ in range(200):  # a contraction on the lower branch for lam below the fold (3.5138...)
        theta = math.sqrt(2 * lam) * math.cosh(theta / 4)
    return -2 * torch.log(torch.cosh((x - 0.5) * theta / 2) / math.cosh(theta / 4))


def bratu(lam: float = 3.5, n: int = 200) -> EquationProblem:
    """The 1-d Bratu problem -u'' = lam exp(u), u(0) = u(1) = 0, by central differences:
    F(u) = T u - lam exp(u), T = tridiag(-1, 2, -1) / h^2; f(u) = T^-1 lam exp(u); u0 = 0."""
    h, _ = interior_grid(n)
    basis, eigenvalues = sine_basis(n)
    inverse = basis @ torch.diag(1 / eigenvalues) @ basis

    def equation(u: torch.Tensor) -> torch.Tensor:
        before, after = _neighbours(u)
        return (2 * u - before - after) / h**2 - lam * torch.exp(u)

    def fixed_point_map(u: torch.Tensor) -> torch.Tensor:
        return (lam * torch.exp(u)) @ inverse

    return EquationProblem(
        f"Bratu (lambda = {lam:g})",
        "Bratu",
        equation,
        fixed_point_map,
        torch.zeros(n, dtype=DTYPE),
        "0",
    )


def tanh_map(seed: int, radius: float, d: int = 64, input_scale: float = 0.1) -> EquationProblem:
    """f(z) = tanh(W z + x): W a Gaussian matrix scaled to spectral radius `radius` (> 1: the
    plain iteration is not a contraction near z = 0), x ~ N(0, input_scale^2); z0 = 0."""
    generator = torch.Generator().manual_seed(seed)
    weights = torch.randn(d, d, generator=generator, dtype=DTYPE)
    weights *= radius / torch.linalg.eigvals(weights).abs().max()
    inputs = input_scale * torch.randn(d, generator=generator, dtype=DTYPE)

    def fixed_point_map(z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z @ weights.T + inputs)

    return EquationProblem(
        f"tanh map (rho = {radius:g}, seed {seed})",
        "tanh map",
        lambda z: z - fixed_point_map(z),
        fixed_point_map,
        torch.zeros(d, dtype=DTYPE),
        "0",
    )


TANH_MAPS = ((0, 1.3), (1, 1.4), (2, 1.5), (3, 1.3), (4, 1.4), (5, 1.5))


def collection(quick: bool = False) -> list[EquationProblem]:
    """The benchmark's problems at their sizes; `quick`: three small ones."""
    if quick:
        return [broyden_tridiagonal(50), chandrasekhar(0.9, 50), tanh_map(0, 1.3, d=16)]
    return [
        discrete_boundary_value(100),
        discrete_integral_equation(100),
        broyden_tridiagonal(500),
        broyden_banded(500),
        trigonometric(100),
        extended_rosenbrock(1000),
        extended_powell_singular(100),
        variably_dimensioned(50),
        brown_almost_linear(50),
        chandrasekhar(0.5, 200),
        chandrasekhar(0.9, 200),
        chandrasekhar(0.9999, 200),
        convection_diffusion(31, 20.0),
        bratu(3.5, 200),
        *(tanh_map(seed, radius) for seed, radius in TANH_MAPS),
    ]
