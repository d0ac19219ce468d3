"""The dense monotone cell relu(W z + U x + b) on vectors, and its W as a splitting operator."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import check_positive_int
from .parametrization import DEFAULT_MARGIN, check_margin, dense_apply, dense_weight
from .splitting import MonotoneCell, MonotoneSplitting


class DenseMonotoneOperator:
    """W = (1 - m) I - A^T A + B - B^T on (batch, d) rows; resolvents by a cached LU of the
    d x d matrix I + alpha (I - W), one per step size."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor, m: float) -> None:
        self.a, self.b, self.m = a, b, check_margin(m)
        self.features = a.shape[1]
        self._factors: dict[float, tuple[torch.Tensor, torch.Tensor]] = {}

    def apply(self, v: torch.Tensor, transpose: bool = False) -> torch.Tensor:
        # W^T swaps the sign of the skew part B - B^T
        return dense_apply(v, self.a, -self.b if transpose else self.b, self.m)

    def weight(self) -> torch.Tensor:
        return dense_weight(self.a, self.b, self.m)

    def resolvent(self, v: torch.Tensor, alpha: float, transpose: bool = False) -> torch.Tensor:
        alpha = float(alpha)
        if alpha not in self._factors:
            eye = torch.eye(self.features, dtype=self.a.dtype, device=self.a.device)
            self._factors[alpha] = torch.linalg.lu_factor(eye + alpha * (eye - self.weight()))
        lu, pivots = self._factors[alpha]
        # rows: (M^{-1} v^T)^T; `adjoint` solves with M^T, the resolvent of W^T
        return torch.linalg.lu_solve(lu, pivots, v.T, adjoint=transpose).T

    def norm(self) -> torch.Tensor:
        eye = torch.eye(self.features, dtype=self.a.dtype, device=self.a.device)
        return torch.linalg.matrix_norm(eye - self.weight(), ord=2)


class MonotoneLinearCell(MonotoneCell):
    """f(z, x) = relu(W z + U x + b), W = (1 - m) I - A^T A + B - B^T (Winston & Kolter, 2020).

    For every A and B the symmetric part of I - W is >= m I, so the equilibrium exists and is
    unique, and the splitting solvers ("peaceman_rachford", "forward_backward") converge to it
    from any start; accelerated solvers ("anderson") find it too. `splitting(x)` gives their
    structure and `equilibrium_map(x)` the map with it attached (for `eq.solve`).

    Gradients: the adjoint y = y J + g has J = D W (D = relu'), whose spectral radius can pass
    1 (about 1.17 for a random 32-feature cell), so the damped fixed-point iteration
    (Implicit's default) may diverge. Use `eq.Implicit("gmres")` (fewest evaluations; any
    invertible system) or `eq.Implicit("peaceman_rachford")` (the adjoint splitting, which
    converges for every A and B; it needs the forward map's splitting).

    Args:
        features: size of the state z.
        input_features: size of the input x (default: features).
        m: monotonicity margin, > 0.
    """

    def __init__(
        self, features: int, input_features: int | None = None, m: float = DEFAULT_MARGIN
    ) -> None:
        super().__init__()
        check_positive_int("MonotoneLinearCell features", features)
        if input_features is not None:
            check_positive_int("MonotoneLinearCell input_features", input_features)
        self.m = check_margin(m)
        self.features = features
        # A and B start as nn.Linear weights would (uniform, bound 1 / sqrt(features))
        bound = 1 / math.sqrt(features)
        self.a = nn.Parameter(torch.empty(features, features).uniform_(-bound, bound))
        self.b = nn.Parameter(torch.empty(features, features).uniform_(-bound, bound))
        self.inject = nn.Linear(features if input_features is None else input_features, features)

    def operator(self) -> DenseMonotoneOperator:
        return DenseMonotoneOperator(self.a, self.b, self.m)

    def weight(self) -> torch.Tensor:
        """The d x d matrix W."""
        return dense_weight(self.a, self.b, self.m)

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(dense_apply(z, self.a, self.b, self.m) + self.inject(x))

    def init_state(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.shape[0], self.features)

    def splitting(self, x: torch.Tensor) -> MonotoneSplitting:
        """The structure of `z -> self(z, x)` for the splitting solvers (flat coordinates)."""
        return MonotoneSplitting(self.operator(), self.inject(x).reshape(x.shape[0], -1))
