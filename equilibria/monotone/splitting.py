"""The structure the splitting solvers use: z = prox(L z + c) with I - L strongly monotone.

A monotone cell's map relu(W z + U x + b) is the forward-backward step of size 1 for the
inclusion 0 in (I - W) z - c + N(z) (c = U x + b, N the normal cone of the nonnegative
orthant, whose resolvent is relu). Its adjoint equation y = W^T D y + g (D = relu' at the
equilibrium) has the same structure in v = D y: v = D (W^T v + g), with the strongly monotone
I - W^T and the prox of a convex quadratic (multiplication by D when D is 0 or 1).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import nn

FlatMap = Callable[[torch.Tensor], torch.Tensor]


class MonotoneOperator(Protocol):
    """W on flat `(batch, features)` matrices, with the margin m of I - W."""

    m: float
    features: int

    def apply(self, v: torch.Tensor, transpose: bool = False) -> torch.Tensor:
        """W v (W^T v with `transpose`), row by row."""

    def resolvent(self, v: torch.Tensor, alpha: float, transpose: bool = False) -> torch.Tensor:
        """(I + alpha (I - W))^{-1} v (with W^T for `transpose`), row by row."""

    def norm(self) -> float:
        """||I - W||_2 (the same for W^T)."""


class MonotoneSplitting:
    """One problem v = prox(L v + c) for the splitting solvers, in flat coordinates.

    Forward (from a cell): L = W, c = U x + b (`bias`), prox = relu, and the solver's iterate
    is v itself. Adjoint (from `adjoint`): L = W^T, c = the incoming gradient g, prox =
    multiplication by D, and the iterate is the preactivation y = L v + c (`preactivation`),
    since the implicit backward solves y = W^T D y + g for y.

    Attributes:
        operator: W, with its resolvent and the norm of I - W.
        bias: c, shape (batch, features).
        mask: D for an adjoint splitting (None: prox = relu).
    """

    def __init__(
        self,
        operator: MonotoneOperator,
        bias: torch.Tensor,
        mask: torch.Tensor | None = None,
        *,
        lipschitz: float | None = None,
    ) -> None:
        if bias.dim() != 2 or bias.shape[1] != operator.features:
            raise ValueError(
                f"the splitting's bias must be a (batch, {operator.features}) matrix, "
                f"got shape {tuple(bias.shape)}"
            )
        self.operator = operator
        self.bias = bias
        self.mask = mask
        self._lipschitz = lipschitz  # ||I - W||_2 once known (the adjoint shares it)

    @property
    def preactivation(self) -> bool:
        """Whether the solver's iterate is L v + c (adjoint) rather than v (forward)."""
        return self.mask is not None

    @property
    def features(self) -> int:
        return self.operator.features

    @property
    def m(self) -> float:
        """The margin: the symmetric part of I - L is >= m I."""
        return self.operator.m

    @property
    def lipschitz(self) -> float:
        """L = ||I - W||_2, the Lipschitz constant of v -> (I - L) v - c (computed once, and
        handed to the adjoint: ||I - W^T||_2 is the same number)."""
        if self._lipschitz is None:
            with torch.no_grad():
                self._lipschitz = float(self.operator.norm())
        return self._lipschitz

    def linear(self, v: torch.Tensor) -> torch.Tensor:
        """L v: W v forward, W^T v for the adjoint."""
        return self.operator.apply(v, transpose=self.preactivation)

    def resolvent(self, v: torch.Tensor, alpha: float) -> torch.Tensor:
        """(I + alpha (I - L))^{-1} v."""
        return self.operator.resolvent(v, alpha, transpose=self.preactivation)

    def prox(self, v: torch.Tensor, alpha: float) -> torch.Tensor:
        """The prox of step alpha of the nonlinearity's convex function: relu(v) forward;
        for the adjoint the prox of sum_i (1 / D_i - 1) v_i^2 / 2, D v where D is 0 or 1."""
        if self.mask is None:
            return torch.relu(v)
        return v * self.mask / (self.mask + alpha * (1 - self.mask))

    def adjoint(self, image: torch.Tensor, grad: torch.Tensor) -> MonotoneSplitting:
        """The splitting of the adjoint equation y = W^T D y + grad at an equilibrium whose
        image (relu of the preactivation) is `image`: D = relu' = 1 where image > 0."""
        if self.preactivation:
            raise ValueError("an adjoint splitting has no adjoint of its own")
        mask = (image.detach() > 0).to(grad.dtype)
        return MonotoneSplitting(self.operator, grad, mask, lipschitz=self._lipschitz)


class EquilibriumMap:
    """The map z -> fn(z) of a monotone cell at one input, carrying its `splitting`.

    Pass it to `eq.solve` (with any solver; the splitting solvers read `splitting`)."""

    def __init__(self, fn: FlatMap, splitting: MonotoneSplitting) -> None:
        self.fn = fn
        self.splitting = splitting

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        self._check_state(z)
        return self.fn(z)

    def _check_state(self, z: torch.Tensor) -> None:
        """A ValueError naming the expected and the given size when z does not fit the map."""
        features, batch = self.splitting.features, self.splitting.bias.shape[0]
        given = z.shape[1:].numel() if z.dim() > 0 else 0
        if given != features:
            raise ValueError(
                f"the monotone cell's map takes states of {features} features per sample (the "
                f"shape of cell.init_state(x)), got one of shape {tuple(z.shape)} ({given} "
                "features per sample)"
            )
        shape = getattr(self.splitting.operator, "shape", None)  # a conv cell's image shape
        if shape is not None and z.dim() > 2 and tuple(z.shape[1:]) != tuple(shape):
            expected = ", ".join(map(str, shape))
            raise ValueError(
                f"the monotone cell's map takes states of shape (batch, {expected}) "
                f"(the shape of cell.init_state(x)), got one of shape {tuple(z.shape)}"
            )
        if z.shape[0] != batch:
            raise ValueError(
                f"the monotone cell's map was built for a batch of {batch} inputs, got a state "
                f"of batch size {z.shape[0]} (shape {tuple(z.shape)})"
            )


class MonotoneCell(nn.Module):
    """A cell relu(W z + U x + b) with the monotone W; subclasses define `splitting(x)`."""

    m: float

    def splitting(self, x: torch.Tensor) -> MonotoneSplitting:
        raise NotImplementedError

    def equilibrium_map(self, x: torch.Tensor) -> EquilibriumMap:
        """`z -> self(z, x)` with `.splitting = self.splitting(x)` attached."""
        return EquilibriumMap(lambda z: self(z, x), self.splitting(x))
