"""Spectral radius of the cell's Jacobian at a state, by (block) power iteration.

rho(J_f(z*)) < 1 means plain iteration converges near z*, and the smaller it is the faster; it is
the quantity to monitor while training a DEQ. The iteration uses vector-Jacobian products only
(J^T has the eigenvalues of J) and a block of a few vectors with a Rayleigh-Ritz step, so a
dominant complex-conjugate pair, common for real non-symmetric Jacobians, is found as well as a
real dominant eigenvalue.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import check_nonnegative, check_positive_int
from ..state import State, StateLayout


def spectral_radius(
    f: Callable[[State], State],
    z: State,
    *,
    iters: int = 100,
    tol: float = 1e-5,
    block: int = 4,
) -> torch.Tensor:
    """Per-sample spectral radius max |lambda(J_f(z))|, shape (batch,).

    Args:
        f: the map whose Jacobian is measured, e.g. `lambda z: cell(z, x)`; same structure in
            and out; samples independent (batch first).
        z: the state (usually the fixed point z*), a tensor or a tuple/list of tensors.
        iters: most power-iteration steps (one vector-Jacobian product per block vector each).
        tol: stop when every sample's estimate changes by at most tol (relative) in one step.
        block: vectors iterated together: 2 resolve a complex pair, more resolve eigenvalues
            of nearly equal modulus (a Ritz estimate from an unsettled block can be too low).

    The result carries no graph. Put the cell in `eval()` first if it holds dropout.
    """
    check_positive_int("spectral_radius iters", iters)
    check_nonnegative("spectral_radius tol", tol)
    check_positive_int("spectral_radius block", block)
    layout = StateLayout.of(z, "z")
    block = min(block, layout.features)
    with torch.enable_grad():
        point = layout.flatten(z).detach().requires_grad_()
        image = f(layout.unflatten(point))
        layout.check_same(image, "the output of f")
        image = layout.flatten(image)
        if not image.requires_grad:  # f does not depend on z: J = 0
            return point.new_zeros(layout.batch).detach()

        def transpose_apply(basis: torch.Tensor) -> torch.Tensor:
            """J^T q for each column q of the (batch, features, block) basis."""
            columns = [
                torch.autograd.grad(image, point, basis[..., j], retain_graph=True)[0]
                for j in range(basis.shape[-1])
            ]
            return torch.stack(columns, dim=-1)

        start = torch.randn(*point.shape, block, dtype=point.dtype, device=point.device)
        basis = torch.linalg.qr(start)[0]
        estimate = None
        for _ in range(iters):
            image_basis = transpose_apply(basis)
            ritz = torch.linalg.eigvals(basis.transpose(1, 2) @ image_basis)
            new = ritz.abs().amax(dim=-1)
            change = None if estimate is None else (new - estimate).abs()
            estimate = new
            if change is not None and bool((change <= tol * estimate).all()):
                break
            basis = torch.linalg.qr(image_basis)[0]
    return estimate.detach()
