"""The solver protocol: an immutable set of hyperparameters that knows how to take one step.

Everything else (counting evaluations, residuals, stopping, keeping each sample's best iterate,
non-finite checks) is the job of the shared loop in `equilibria.solvers.loop`, so a solver only
says how to propose the next iterate.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch.autograd import forward_ad

FlatMap = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Step:
    """A proposed next iterate; `fz` is f(z) when the solver already evaluated it, else None."""

    z: torch.Tensor
    fz: torch.Tensor | None
    state: Any


class EvaluationBudget:
    """Wraps f so that every evaluation is counted; solvers read `remaining` before extra calls.

    A Jacobian-vector product (`jvp`) evaluates f once, on dual numbers, and counts as one
    evaluation. `splitting` is the monotone splitting f carries (its `.splitting` attribute,
    see `equilibria.monotone`), or None; each application of its linear operator or resolvent
    goes through `counted`.
    """

    def __init__(self, fn: FlatMap, limit: int, splitting: Any = None) -> None:
        self.fn = fn
        self.limit = limit
        self.count = 0
        self.splitting = splitting
        self._stop: tuple[torch.Tensor, float, str] | None = None
        self._norms: torch.Tensor | None = None

    @property
    def remaining(self) -> int:
        return self.limit - self.count

    def stop_at(
        self, fz: torch.Tensor, tol: float, stop_mode: str, norms: torch.Tensor | None = None
    ) -> None:
        """Record the loop's stopping rule at the current image (the loop calls this), with
        the per-sample norms it measured there: ||f(z) - z|| and ||f(z)||, shape (2, batch)."""
        self._stop = (fz, tol, stop_mode)
        self._norms = norms

    def measured_norms(self, fz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(||f(z) - z||, ||f(z)||) per sample as the loop measured them at `fz`, shape
        (batch,) each, so that a solver does not pass over the state again for them; None
        when `fz` is not the image the loop measured."""
        if self._norms is None or self._stop is None or self._stop[0] is not fz:
            return None
        return self._norms[0], self._norms[1]

    @property
    def target(self) -> torch.Tensor | None:
        """Per sample, the absolute residual ||f(z) - z|| at which the loop stops, measured at
        the current image (None outside the loop). Solvers with inner iterations (Krylov
        methods) stop those there: solving further buys nothing the loop will use."""
        if self._stop is None:
            return None
        fz, tol, stop_mode = self._stop
        if stop_mode == "abs":
            return torch.full(fz.shape[:1], tol, dtype=torch.float64, device=fz.device)
        return tol * self.image_norm(fz).double()

    def residual_norm(self, g: torch.Tensor, fz: torch.Tensor) -> torch.Tensor:
        """||g|| = ||f(z) - z|| per sample, (batch,), without a gradient: the loop's measurement
        where `fz` is its image, else computed."""
        measured = self.measured_norms(fz)
        return measured[0] if measured is not None else g.detach().norm(dim=1)

    def image_norm(self, fz: torch.Tensor) -> torch.Tensor:
        """||f(z)|| per sample, (batch,), without a gradient: the loop's measurement where `fz`
        is its image, else computed."""
        measured = self.measured_norms(fz)
        return measured[1] if measured is not None else fz.detach().norm(dim=1)

    def image_rounding(self, fz: torch.Tensor) -> torch.Tensor:
        """eps ||f(z)|| per sample, (batch,): `output_rounding` from the loop's measurement."""
        return torch.finfo(fz.dtype).eps * self.image_norm(fz)

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        self.count += 1
        return self.fn(z)

    def counted(self, operation: Callable[..., torch.Tensor], *args: Any) -> torch.Tensor:
        """operation(*args), counted as one evaluation (a splitting's linear operator or
        resolvent: each costs about as much as one evaluation of f)."""
        self.count += 1
        return operation(*args)

    def jvp(self, z: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """J_f(z) v by forward-mode automatic differentiation, counted as one evaluation."""
        self.count += 1
        return forward_jvp(self.fn, z, v)


def forward_jvp(fn: FlatMap, z: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """J_fn(z) v from one evaluation of fn on dual numbers (forward-mode AD).

    Forward mode runs under torch.no_grad() and, unlike functional transforms, lets a cell
    update its buffers in place (BatchNorm in training mode). Under grad mode the product stays
    differentiable, so a solver that uses it can itself be differentiated.
    """
    with _forward_mode_kernels(), forward_ad.dual_level():
        out = fn(forward_ad.make_dual(_own_memory(z), _own_memory(v)))
        tangent = forward_ad.unpack_dual(out).tangent
    return torch.zeros_like(out) if tangent is None else tangent  # None: f ignores z


def _own_memory(t: torch.Tensor) -> torch.Tensor:
    """`t`, copied when several of its elements share one memory location (an expanded
    tensor, such as the gradient of `.sum()`), which a dual tensor cannot hold."""
    if any(stride == 0 and size > 1 for stride, size in zip(t.stride(), t.shape, strict=True)):
        return t.contiguous()
    return t


@contextmanager
def _forward_mode_kernels() -> Iterator[None]:
    """Attention in kernels that have forward-mode derivatives.

    The fused attention kernels (SDPA's flash kernel, the nn.TransformerEncoderLayer and
    nn.MultiheadAttention inference fast path) have none, so for the product SDPA runs its
    math kernel and the fast path is off. Both switches are process-wide in PyTorch; they are
    restored on exit.
    """
    with ExitStack() as stack:
        try:
            from torch.nn.attention import SDPBackend, sdpa_kernel
        except ImportError:  # torch < 2.3 has no such switch
            pass
        else:
            stack.enter_context(sdpa_kernel([SDPBackend.MATH]))
        mha = getattr(torch.backends, "mha", None)
        if mha is not None and hasattr(mha, "set_fastpath_enabled"):
            previous = mha.get_fastpath_enabled()
            mha.set_fastpath_enabled(False)
            stack.callback(mha.set_fastpath_enabled, previous)
        yield


class Solver(ABC):
    """A fixed-point solver for z = f(z) on `(batch, features)` matrices.

    Subclasses are frozen dataclasses holding hyperparameters only. `init` builds the solver's
    working state from the first iterate; `step` proposes the next iterate from the current one,
    its image `fz = f(z)` and residual `g = fz - z`.
    """

    name: ClassVar[str]
    # True for solvers that assume f is affine (GMRES): they are meant for linear equations
    # such as the implicit backward's adjoint, not for nonlinear forward solves
    affine_only: ClassVar[bool] = False
    # True for solvers that need the map's monotone splitting (EvaluationBudget.splitting)
    needs_splitting: ClassVar[bool] = False

    def init(self, z: torch.Tensor, fz: torch.Tensor, g: torch.Tensor) -> Any:
        """Working state before the first step (history buffers and the like)."""
        return None

    @abstractmethod
    def step(
        self, f: EvaluationBudget, z: torch.Tensor, fz: torch.Tensor, g: torch.Tensor, state: Any
    ) -> Step:
        """Propose the next iterate. Extra calls to `f` are allowed and counted."""


def autocast_off(device: torch.device) -> AbstractContextManager:
    """A context in which the solvers' own products run in the state's dtype under autocast.

    Evaluations of f belong outside it: they run under the caller's autocast.
    """
    try:
        if not torch.is_autocast_enabled(device.type):  # the usual case: nothing to turn off
            return nullcontext()
    except TypeError:  # torch < 2.4 takes no device type here: turn it off to be sure
        pass
    try:
        return torch.autocast(device.type, enabled=False)
    except RuntimeError:  # a device type autocast does not support: nothing to turn off
        return nullcontext()


def output_rounding(fz: torch.Tensor) -> torch.Tensor:
    """Per sample, the size of the rounding in f's output, eps ||f(z)||, shape (batch, 1).

    Residual differences no longer than this carry no information about f.
    """
    return torch.finfo(fz.dtype).eps * fz.detach().norm(dim=1, keepdim=True)


def write_slot(buffer: torch.Tensor, dim: int, index: int, value: torch.Tensor) -> torch.Tensor:
    """Write `value` at position `index` of `buffer` along `dim`.

    In place when no gradient is being recorded (the usual no-grad forward solve); out of place
    when autograd is tracing the solve (the unrolled reference backward), so that saved tensors
    are never modified.
    """
    tracing = torch.is_grad_enabled() and (buffer.requires_grad or value.requires_grad)
    if not tracing:
        buffer.select(dim, index).copy_(value)
        return buffer
    position = torch.tensor([index], device=buffer.device)
    return buffer.index_copy(dim, position, value.unsqueeze(dim))
