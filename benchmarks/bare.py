"""The cell work of a solve or a training step and nothing else: the physical limit."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .problems import Problem


def bare_forward(problem: Problem, calls: int) -> Callable[[], torch.Tensor]:
    """`calls` cell applications z <- f(z) without autograd: the forward solve's cell work."""

    def run() -> torch.Tensor:
        with torch.no_grad():
            z = problem.z0()
            for _ in range(calls):
                z = problem.f(z)
        return z

    return run


def bare_step(problem: Problem, forward_nfe: int, backward_nfe: int) -> Callable[[], None]:
    """The cell work of an implicit training step with the given NFE, and nothing else."""
    forward = bare_forward(problem, forward_nfe)

    def run() -> None:
        problem.zero_grad()
        z = forward().requires_grad_()
        fz = problem.f(z)
        y = problem.upstream
        for _ in range(backward_nfe):
            (vjp,) = torch.autograd.grad(fz, z, y, retain_graph=True)
            y = vjp + problem.upstream
        fz.backward(y)

    return run
