"""Jacobian regularization: a Hutchinson estimate of ||J_f(z*)||_F^2 / dim on the DEQ's graph.

For eps ~ N(0, I), E ||eps^T J||^2 = ||J||_F^2, so one vector-Jacobian product per probe gives an
unbiased estimate. `eq.DEQ(..., jacobian_penalty=eq.JacobianPenalty(gamma, p, probes))` takes
that product on the graph of the differentiable f(z*) application the layer already builds (no
extra cell evaluation) and puts gamma times the estimate on `deq.stats.jacobian_loss`, to be added
to the task loss.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import check_fraction, check_nonnegative, check_positive_int
from ..state import State
from .draws import decision_generator


@dataclass(frozen=True)
class JacobianPenalty:
    """Settings of the Jacobian regularizer.

    Attributes:
        gamma: weight of the penalty in the loss (>= 0).
        p: probability that a training call computes it (in [0, 1]); other calls report 0.
        probes: Gaussian probe vectors per estimate (more: lower variance, one VJP each).
    """

    gamma: float = 1.0
    p: float = 1.0
    probes: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "gamma", check_nonnegative("JacobianPenalty gamma", self.gamma))
        object.__setattr__(self, "p", check_fraction("JacobianPenalty p", self.p, allow_zero=True))
        check_positive_int("JacobianPenalty probes", self.probes)

    def draw(self) -> bool:
        """Whether this training call computes the penalty: a Bernoulli(p) draw (from the
        `shared_draws` generator when one is active, else torch's global one)."""
        if self.p >= 1.0:
            return True
        if self.p <= 0.0:
            return False
        return bool(torch.rand((), generator=decision_generator()) < self.p)


def _parts(state: State) -> Sequence[torch.Tensor]:
    return (state,) if isinstance(state, torch.Tensor) else tuple(state)


def hutchinson_frobenius(
    fz: State, z: State, probes: int = 1, *, create_graph: bool = True
) -> torch.Tensor:
    """Per-sample estimate of ||J||_F^2 / dim, J = d fz / d z, by Gaussian Hutchinson probes.

    `fz` must have been computed from `z` with autograd on (states of any structure, batch
    first; samples independent). With `create_graph` the estimate is differentiable w.r.t. the
    parameters that produced `fz`. The graph of `fz` is kept for later use. Returns shape (batch,).
    """
    check_positive_int("probes", probes)
    outputs, inputs = _parts(fz), _parts(z)
    if not all(o.requires_grad for o in outputs) or not all(i.requires_grad for i in inputs):
        raise ValueError(
            "hutchinson_frobenius needs fz computed from z with autograd on: z must require "
            "grad and fz must depend on it"
        )
    batch = outputs[0].shape[0]
    dim = sum(o[0].numel() for o in outputs)
    total = outputs[0].new_zeros(batch)
    for _ in range(probes):
        eps = [torch.randn_like(o) for o in outputs]
        vjps = torch.autograd.grad(
            outputs, inputs, eps, create_graph=create_graph, retain_graph=True, allow_unused=True
        )
        for v in vjps:
            if v is not None:
                total = total + v.pow(2).reshape(batch, -1).sum(1)
    return total / (probes * dim)


class FirstApplication:
    """Wraps a flat cell map and keeps the input and output of its first call.

    A backward strategy applies the cell at z* first; keeping that application lets the penalty be
    computed on the same graph. An input without autograd is replaced by a detached copy that
    requires grad, so the Jacobian w.r.t. the state exists (no gradient flows into that copy).
    """

    def __init__(self, f) -> None:
        self.f = f
        self.z: torch.Tensor | None = None
        self.fz: torch.Tensor | None = None

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        if self.z is not None:
            return self.f(z)
        if not z.requires_grad:
            z = z.detach().requires_grad_()
        self.z, self.fz = z, self.f(z)
        return self.fz
