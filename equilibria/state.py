"""States of any structure, seen by the solvers as one flat vector per sample.

A DEQ state is a batch-first tensor, or a tuple/list of batch-first tensors (for example one feature
map per resolution). Solvers work on a `(batch, features)` matrix; `StateLayout` converts between
the two and checks that a cell returns the same structure it was given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .errors import NonFiniteError, StateMismatchError

State = torch.Tensor | tuple[torch.Tensor, ...] | list[torch.Tensor]

LOW_PRECISION = (torch.float16, torch.bfloat16)


def solver_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the solvers compute in: float32 for half-precision states, else the state's."""
    return torch.float32 if dtype in LOW_PRECISION else dtype


def _parts(state: object) -> tuple[str, Sequence[object]]:
    if isinstance(state, torch.Tensor):
        return "tensor", (state,)
    if isinstance(state, (tuple, list)):
        return type(state).__name__, state
    return type(state).__name__, ()


def describe(state: object) -> str:
    """A short human description of a state's structure, shapes and dtypes."""
    kind, parts = _parts(state)
    if kind == "tensor":
        return f"tensor of shape {tuple(state.shape)} ({state.dtype})"
    if isinstance(state, (tuple, list)):
        inner = ", ".join(
            f"{tuple(p.shape)} {p.dtype}" if isinstance(p, torch.Tensor) else type(p).__name__
            for p in parts
        )
        return f"{kind} of {len(parts)} [{inner}]"
    return f"object of type {kind}"


@dataclass(frozen=True)
class StateLayout:
    """Structure, per-sample shapes and dtype of a state; flattens and unflattens it."""

    kind: str  # "tensor", "tuple" or "list"
    shapes: tuple[torch.Size, ...]  # per-sample shapes, batch dimension removed
    batch: int
    dtype: torch.dtype
    device: torch.device

    @classmethod
    def of(cls, state: object, what: str = "state") -> StateLayout:
        """Read the layout of `state`, raising a clear error when it is not a valid state."""
        kind, parts = _parts(state)
        if not parts:
            raise TypeError(
                f"{what} must be a tensor or a non-empty tuple/list of tensors, "
                f"got {describe(state)}"
            )
        for i, part in enumerate(parts):
            if not isinstance(part, torch.Tensor):
                raise TypeError(f"{what} part {i} is a {type(part).__name__}, expected a tensor")
            if part.dim() < 1:
                raise ValueError(f"{what} part {i} is a scalar; states are batch-first tensors")
            if not part.is_floating_point():
                raise TypeError(f"{what} part {i} has dtype {part.dtype}; states must be floating")
        first = parts[0]
        for i, part in enumerate(parts[1:], start=1):
            if part.shape[0] != first.shape[0]:
                raise ValueError(
                    f"{what} parts disagree on the batch size: part 0 has {first.shape[0]}, "
                    f"part {i} has {part.shape[0]}"
                )
            if part.dtype != first.dtype or part.device != first.device:
                raise ValueError(
                    f"{what} parts must share one dtype and device: part 0 is {first.dtype} on "
                    f"{first.device}, part {i} is {part.dtype} on {part.device}"
                )
        return cls(
            kind=kind,
            shapes=tuple(p.shape[1:] for p in parts),
            batch=first.shape[0],
            dtype=first.dtype,
            device=first.device,
        )

    @property
    def sizes(self) -> list[int]:
        return [s.numel() for s in self.shapes]

    @property
    def features(self) -> int:
        """Number of entries per sample."""
        return sum(self.sizes)

    @property
    def compute_dtype(self) -> torch.dtype:
        return solver_dtype(self.dtype)

    def describe(self) -> str:
        shapes = [(self.batch, *s) for s in self.shapes]
        if self.kind == "tensor":
            return f"tensor of shape {shapes[0]} ({self.dtype})"
        return f"{self.kind} of {len(shapes)} [{', '.join(f'{s} {self.dtype}' for s in shapes)}]"

    def flatten(self, state: State) -> torch.Tensor:
        """`(batch, features)` matrix in the solver dtype."""
        _, parts = _parts(state)
        # sizes, not -1: a batch of no samples has no size to infer
        if len(parts) == 1:
            flat = parts[0].reshape(self.batch, self.sizes[0])
        else:
            sizes = self.sizes
            flat = torch.cat(
                [p.reshape(self.batch, n) for p, n in zip(parts, sizes, strict=True)], dim=1
            )
        return flat.to(self.compute_dtype)

    def unflatten(self, flat: torch.Tensor) -> State:
        """The structured state (in the state dtype) from a `(batch, features)` matrix."""
        flat = flat.to(self.dtype)
        if self.kind == "tensor":
            return flat.reshape(self.batch, *self.shapes[0])
        chunks = torch.split(flat, self.sizes, dim=1)
        parts = [c.reshape(self.batch, *s) for c, s in zip(chunks, self.shapes, strict=True)]
        return tuple(parts) if self.kind == "tuple" else parts

    def check_same(self, other: object, what: str) -> None:
        """Raise StateMismatchError unless `other` has exactly this layout."""
        try:
            layout = StateLayout.of(other, what)
        except (TypeError, ValueError) as error:
            raise StateMismatchError(
                f"{what} must have the same structure as the state ({self.describe()}), "
                f"got {describe(other)}: {error}"
            ) from None
        if layout != self:
            raise StateMismatchError(
                f"{what} must match the state: expected {self.describe()}, got {layout.describe()}"
            )

    def locate_nonfinite(self, flat: torch.Tensor) -> str:
        """Where a flat matrix holds NaN/inf: which part and which samples (for error messages)."""
        bad = ~torch.isfinite(flat)
        found = []
        for i, chunk in enumerate(torch.split(bad, self.sizes, dim=1)):
            samples = chunk.any(dim=1).nonzero().flatten().tolist()
            if samples:
                label = "" if self.kind == "tensor" else f"part {i}, "
                kinds = "NaN" if torch.isnan(torch.split(flat, self.sizes, 1)[i]).any() else "inf"
                shown = samples[:8] + (["..."] if len(samples) > 8 else [])
                found.append(f"{kinds} in {label}samples {shown}")
        return "; ".join(found) if found else "no non-finite values"


def check_finite(state: object, what: str) -> None:
    """Raise NonFiniteError naming the parts and samples of `state` that hold NaN or inf."""
    _, parts = _parts(state)
    tensors = [
        (i, p) for i, p in enumerate(parts) if isinstance(p, torch.Tensor) and p.is_floating_point()
    ]
    if not tensors or bool(torch.stack([torch.isfinite(p).all() for _, p in tensors]).all()):
        return
    for i, part in tensors:
        if not bool(torch.isfinite(part).all()):
            label = what if len(parts) == 1 else f"{what} part {i}"
            if part.dim() == 0:
                raise NonFiniteError(f"{label} is {part.item()}")
            layout = StateLayout.of(part, what)
            where = layout.locate_nonfinite(part.reshape(part.shape[0], -1))
            raise NonFiniteError(f"{label} holds non-finite values: {where}")
