"""One cycle of GMRES, batched per sample: the linear solver of the Newton and GMRES solvers.

Each sample is its own linear system A_i x_i = b_i; the operator is applied to the whole
`(batch, features)` matrix at once, and every per-sample quantity (basis, Hessenberg matrix,
rotations, stopping) stays per sample. A restarted GMRES is one cycle after another, each
started from the previous cycle's x. A cycle may first search along given directions (the
flexible form of GMRES: the solution is a combination of those directions and the Krylov
vectors), which is how Newton reuses the corrections of its earlier steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import check_positive_int
from .base import EvaluationBudget, autocast_off, write_slot

# A v and the size of the rounding error in it, per sample (shape (batch,)): directions no
# longer than that rounding carry no information about A.
LinearOperator = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

# multiples of the dtype's epsilon below which what orthogonalization leaves of a product is
# round-off (the new direction is already in the basis: the Krylov space is exhausted)
ORTHOGONALIZATION_ROUNDING = 16.0


# an augment direction whose part outside the ones before it is below this fraction of its
# length adds nothing reliable to the search space
DEPENDENT = 1e-3


@dataclass
class KrylovResult:
    x: torch.Tensor  # (batch, features), in b's dtype
    residual: torch.Tensor  # (batch,) float64: ||b - A x|| by the least-squares recurrence
    products: int  # applications of the operator


# inner solves aim at this fraction of the loop's target: the loop measures the residual afresh
# at the new point (in "rel" mode against a new ||f(z)||), so a little margin saves a cycle
TARGET_MARGIN = 0.5


def loop_tolerance(f: EvaluationBudget, residual_norm: torch.Tensor) -> torch.Tensor | None:
    """Per sample, the relative residual of an inner linear solve beyond which the loop's
    target is met, so further products would be wasted (None when f has no target)."""
    target = f.target
    if target is None:
        return None
    norm = residual_norm.detach().double()
    return (TARGET_MARGIN * target / torch.where(norm > 0, norm, 1.0)).clamp(max=1.0)


def check_relative_tolerance(name: str, value: object) -> float:
    """`value` if it lies in [0, 1) (a residual reduction that asks for progress), else raise a
    ValueError (errors.check_fraction's intervals include 1)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (number and 0 <= value < 1):
        raise ValueError(f"{name} must lie in [0, 1), got {value!r}")
    return float(value)


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of the basis: the state's, but at least float32 (bf16 cannot keep it
    orthogonal)."""
    return torch.promote_types(dtype, torch.float32)


def gmres(
    apply: LinearOperator,
    b: torch.Tensor,
    *,
    max_iter: int,
    rtol: float | torch.Tensor,
    x0: torch.Tensor | None = None,
    augment: torch.Tensor | None = None,
) -> KrylovResult:
    """One GMRES cycle on A x = b per sample: at most `max_iter` products, `max_iter + 1` basis
    vectors.

    A sample stops once ||b - A x|| <= rtol ||b|| (`rtol` a number or a per-sample `(batch,)`
    tensor), once its Krylov space is exhausted (x is then exact up to rounding), or once a new
    direction is lost in the rounding of its product; from then on its x no longer changes.
    `apply` receives vectors in `work_dtype(b.dtype)`, of unit norm (or zero); `x0` (None:
    zero) costs one more product. `augment` (batch, p, features): directions searched before
    the Krylov vectors, one product each (a zero row is skipped: that sample takes its next
    Krylov vector instead). The residual stays orthogonal to A times the searched space, so
    b . (b - A x) = ||b - A x||^2 as for plain GMRES. Synchronizes with the device once per
    iteration.
    """
    check_positive_int("GMRES max_iter", max_iter)
    batch, features = b.shape
    device, work = b.device, work_dtype(b.dtype)
    products = 0
    augment, valid = _unit_directions(augment, batch, features, work, device)
    # per column, where its direction came from: an augment row (index < p) or a basis vector
    sources = torch.zeros(batch, max_iter, dtype=torch.long, device=device)
    started = torch.zeros(batch, dtype=torch.bool, device=device)  # took the first basis vector
    if x0 is None:
        x, r = b.new_zeros(batch, features, dtype=work), b.to(work)
    else:
        x = x0.to(work)
        with autocast_off(device):
            size = x.norm(dim=1, keepdim=True)
        ax, _ = apply(x / torch.where(size > 0, size, 1.0))  # unit vectors only, as promised
        products += 1
        with autocast_off(device):
            r = b.to(work) - size * ax.to(work)
    with autocast_off(device):
        target = torch.as_tensor(rtol, dtype=torch.float64, device=device) * b.norm(dim=1).double()
        beta = r.norm(dim=1, keepdim=True)
        basis = r.new_zeros(batch, max_iter + 1, features)
        basis = write_slot(basis, 1, 0, r / torch.where(beta > 0, beta, 1.0))
        beta = beta.squeeze(1).double()
        # the Hessenberg matrix is kept as its QR factors: the product of the Givens rotations
        # so far (Q^T, applied to a new column with one batched product) and the triangle R
        rotations = torch.eye(max_iter + 1, dtype=torch.float64, device=device).repeat(batch, 1, 1)
        triangle = beta.new_zeros(batch, max_iter, max_iter)
        used = torch.zeros(batch, max_iter, dtype=torch.bool, device=device)
        residual = beta
        active = residual > target
    iterations = 0
    for j in range(max_iter):
        if not bool(active.any()):  # the one synchronization of the iteration
            break
        if j < augment.shape[1]:
            # an augment direction where the sample has one, else its next Krylov vector: the
            # first basis vector once, then the newest one (the Arnoldi continuation)
            take = valid[:, j]
            krylov = torch.where(started, j, 0)
            source = torch.where(take, j, augment.shape[1] + krylov)
            direction_j = torch.where(
                take.unsqueeze(1), augment[:, j], basis[torch.arange(batch, device=device), krylov]
            )
            started = started | ~take
        else:
            krylov = torch.where(started, j, 0)
            source = augment.shape[1] + krylov
            direction_j = (
                basis[:, j]
                if bool(started.all())
                else basis[torch.arange(batch, device=device), krylov]
            )
            started = torch.ones_like(started)
        sources = write_slot(sources, 1, j, source)
        product, rounding = apply(direction_j)
        products += 1
        iterations = j + 1
        with autocast_off(device):
            column, direction, length = _orthogonalize(product.to(work), basis[:, : j + 1])
            rounding = rounding.double()
            # what is left of the product after orthogonalization is a new direction unless it
            # is round-off: the space is then exhausted, and a zero last entry says so exactly
            exhausted = length <= rounding + ORTHOGONALIZATION_ROUNDING * torch.finfo(
                work
            ).eps * column.norm(dim=1)
            length = torch.where(exhausted | ~active, 0.0, length)
            unit = torch.where(length > 0, length, 1.0).unsqueeze(1).to(work)
            basis = write_slot(
                basis, 1, j + 1, torch.where((length > 0).unsqueeze(1), direction / unit, 0.0)
            )
            column = torch.cat([column, length.unsqueeze(1)], dim=1)  # (batch, j + 2)
            rotated = torch.bmm(rotations[:, : j + 2, : j + 2], column.unsqueeze(2)).squeeze(2)
            diagonal, below = rotated[:, j], rotated[:, j + 1]
            pivot_sq = diagonal.square() + below.square()
            # a pivot at the rounding of the product: the column adds nothing (A is singular on
            # the space, or the product is noise); the sample stops with the columns before
            usable = active & (pivot_sq > rounding.square())
            pivot = torch.where(usable, torch.where(usable, pivot_sq, 1.0).sqrt(), 1.0)
            cos = torch.where(usable, diagonal / pivot, 1.0)
            sin = torch.where(usable, below / pivot, 0.0)
            upper = torch.where(usable.unsqueeze(1), rotated[:, :j], 0.0)
            triangle = write_slot(
                triangle, 2, j, _pad(torch.cat([upper, pivot[:, None]], 1), max_iter)
            )
            # both new rows from the old ones before either is written (in place without grad)
            row_j, row_next = rotations[:, j], rotations[:, j + 1]
            cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
            new_j, new_next = cos * row_j + sin * row_next, cos * row_next - sin * row_j
            rotations = write_slot(write_slot(rotations, 1, j, new_j), 1, j + 1, new_next)
            used = write_slot(used, 1, j, usable)
            # |beta (Q^T e_1)_{j+1}| is the least-squares residual over the first j + 1 columns
            residual = torch.where(usable, (beta * rotations[:, j + 1, 0]).abs(), residual)
            active = usable & (residual > target)
    if iterations:
        with autocast_off(device):
            x = x + _combination(
                augment, basis, sources, triangle, rotations, used, beta, iterations
            )
    return KrylovResult(x=x.to(b.dtype), residual=residual, products=products)


def _orthogonalize(
    product: torch.Tensor, basis: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Classical Gram-Schmidt applied twice: the coefficients (float64), the remainder and its
    norm (float64).

    Twice is as orthogonal as modified Gram-Schmidt, but each pass is two batched products
    instead of a sequence of j small ones (fewer kernel launches on an accelerator).
    """
    coefficients = torch.zeros(
        product.shape[0], basis.shape[1], dtype=torch.float64, device=product.device
    )
    for _ in range(2):
        # row vector times matrix: batched vector-matrix products are faster than
        # matrix-vector ones on CPU
        h = torch.bmm(product.unsqueeze(1), basis.transpose(1, 2))
        product = torch.baddbmm(product.unsqueeze(1), h, basis, alpha=-1).squeeze(1)
        coefficients = coefficients + h.squeeze(1).double()
    return coefficients, product, product.norm(dim=1).double()


def _pad(column: torch.Tensor, size: int) -> torch.Tensor:
    """`column` (batch, n) with zeros appended up to (batch, size)."""
    return torch.nn.functional.pad(column, (0, size - column.shape[1]))


def _unit_directions(
    augment: torch.Tensor | None, batch: int, features: int, work: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The augment directions made orthonormal (batch, p, features), and per row whether it
    adds a direction to the ones before it (nearly dependent directions would make the
    combination of the answer lose its digits)."""
    if augment is None:
        return torch.zeros(batch, 0, features, dtype=work, device=device), torch.zeros(
            batch, 0, dtype=torch.bool, device=device
        )
    with autocast_off(device):
        augment = augment.to(work)
        units, valid = [], []
        for j in range(augment.shape[1]):  # Gram-Schmidt, twice, against the rows kept so far
            row = augment[:, j]
            for _ in range(2 if units else 0):
                kept = torch.stack(units, dim=1)
                along = torch.bmm(torch.bmm(row.unsqueeze(1), kept.transpose(1, 2)), kept)
                row = row - along.squeeze(1)
            size = row.norm(dim=1, keepdim=True)
            adds = size > DEPENDENT * augment[:, j].norm(dim=1, keepdim=True)
            units.append(torch.where(adds, row / torch.where(adds, size, 1.0), 0.0))
            valid.append(adds.squeeze(1))
        return torch.stack(units, dim=1), torch.stack(valid, dim=1)


def _combination(
    augment: torch.Tensor,
    basis: torch.Tensor,
    sources: torch.Tensor,
    triangle: torch.Tensor,
    rotations: torch.Tensor,
    used: torch.Tensor,
    beta: torch.Tensor,
    n: int,
) -> torch.Tensor:
    """sum_j y_j z_j with y the least-squares solution R y = beta (Q^T e_1) over n columns and
    z_j the direction of column j (`sources`: an augment row, or p + a basis index).

    Unused columns (after a sample stopped) hold e_j in R and get weight 0, so they neither
    divide by zero nor move x.
    """
    rhs = beta.unsqueeze(1) * rotations[:, :n, 0]
    y = torch.linalg.solve_triangular(triangle[:, :n, :n], rhs.unsqueeze(2), upper=True)
    y = torch.where(used[:, :n], y.squeeze(2), 0.0)
    p = augment.shape[1]
    if p == 0:
        return torch.bmm(y.to(basis.dtype).unsqueeze(1), basis[:, :n]).squeeze(1)
    weights = y.new_zeros(y.shape[0], p + basis.shape[1])
    weights = weights.scatter_add(1, sources[:, :n], y).to(basis.dtype)
    return (
        torch.bmm(weights[:, None, :p], augment) + torch.bmm(weights[:, None, p:], basis)
    ).squeeze(1)
