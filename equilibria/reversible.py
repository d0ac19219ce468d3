"""The reversible backward (McCallum, Arora & Foster, 2025): a forward iteration that can be undone
exactly, differentiated by rebuilding its states from the last ones.

From y_0 = z_0 (the initial state) each step computes, with a relaxation b in (0, 2), b != 1,

    y_{n+1} = (1 - b) y_n + b f(z_n)
    z_{n+1} = (1 - b) z_n + b f(y_{n+1})

and returns z_N. A step is inverted by z_n = (z_{n+1} - b f(y_{n+1})) / (1 - b), then
y_n = (y_{n+1} - b f(z_n)) / (1 - b). The backward pass walks the steps from the last one,
rebuilding each earlier state and taking the vector-Jacobian products of that one step, so the
gradient is the exact gradient of the output the forward computed, converged or not, while the
memory kept does not grow with the number of steps.

Each sample stops stepping once its residual ||f(z_n) - z_n|| meets the tolerance (or it
diverges), so each sample has its own step count; the backward replays exactly those steps.

Rounding: the inverse multiplies errors by at least 1 / |1 - b| per step, and an error in a
state reaches the next undone step through f, whose Lipschitz constant can be large (an
untrained cell with normalization at states near zero): in the cell's float32 a rebuilt state
can lose every digit within two steps. So by default the states y, z are kept in float64 while
f is evaluated, in its own dtype, at the states rounded to it. The rebuild repeats the float64
arithmetic backwards; its error (about 1e-16 times 1 / |1 - b| per step) almost never changes
the rounded point f is evaluated at, so f's outputs in the rebuild are the forward's, bit for
bit, and the error does not pass through f. States are kept every `checkpoint_every` steps, and
the rebuild restarts from each kept state; it measures its own error against them (and against
z_0) and warns when it is large.

Unlike the other strategies, this one owns the forward solve (the configured solver is not used)
and its gradient reaches the tensors f closes over (module parameters, the injected input) as
the inputs of one autograd.Function: they are found by watching the first evaluation of f.
Those tensors must not change between the forward and the backward pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from .backward import BACKWARDS, Backward, FlatMap, Recorder
from .errors import (
    NonFiniteError,
    StateMismatchError,
    UnsupportedError,
    check_positive_int,
    warn_at_caller,
)
from .fixed_point import SolveSettings, functorch_transform, refuse_vmap, report_failure
from .solution import Solution, Status
from .solvers.base import autocast_off
from .stability.dropout import VariationalDropout
from .state import State, StateLayout, check_finite

# a rebuilt state farther than this (relative, per sample) from the kept one warns
RECONSTRUCTION_WARNING = 1e-3
# expected entries per kept-state interval whose rebuilt value rounds differently for f
MOVED_ENTRIES = 0.1
# a sample "makes progress" when its best residual drops by at least this fraction
PROGRESS_FRACTION = 1e-3


class ReconstructionWarning(UserWarning):
    """The reversible backward rebuilt its states with a large rounding error."""


def check_relaxation(b: Any) -> float:
    """`b` as a float if it lies in (0, 2) and is not 1, else a one-line ValueError."""
    number = isinstance(b, (int, float)) and not isinstance(b, bool)
    if not (number and 0 < b < 2 and b != 1):
        raise ValueError(
            f"Reversible b must lie in (0, 2) and differ from 1 (at 1 a step cannot be "
            f"undone), got {b!r}"
        )
    return float(b)


PRECISIONS = ("float64", "native")


def check_precision(precision: Any) -> str:
    """`precision` if it names a state precision, else a one-line ValueError."""
    if precision not in PRECISIONS:
        raise ValueError(f"Reversible precision must be 'float64' or 'native', got {precision!r}")
    return precision


def wide_dtype(dtype: torch.dtype) -> torch.dtype:
    """The double-precision dtype of `dtype`'s kind: float64, or complex128 for complex."""
    return torch.complex128 if dtype.is_complex else torch.float64


def auto_interval(
    b: float, dtype: torch.dtype, state_dtype: torch.dtype | None = None, elements: int = 1
) -> int:
    """Steps between kept states, for a cell computing in `dtype`, states kept in
    `state_dtype` (default: `dtype`) and `elements` entries in a state (the whole batch).

    Native states: rounding, amplified by up to 1 / (1 - b)^2 per undone step (the modes the
    forward damps fastest; measured 2.2-3.5-fold at b = 0.5 or 1.5 and 8-10-fold at 0.8 or 1.2
    on a tanh and a conv cell), stays below sqrt(eps) of `dtype`: every 5 steps at b = 0.5 in
    float32, 13 in float64.

    Wider states: while f's outputs are the forward's bit for bit, the rebuild's error grows by
    exactly g = 1 / |1 - b| per undone step, from eps(state). Each entry moves the rounded point
    f sees with a chance of about its error over eps(cell), and one that moves passes through
    f like a native rounding error. So the interval keeps the expected number of such entries
    over an interval, 2 `elements` (eps(state) / eps(cell)) g^k g / (g - 1), below 0.1: for
    float64 states of a float32 cell with 10^5 entries, every 7 steps at b = 0.5, 3 at 0.8.
    """
    growth = 1 / abs(1 - b)
    state_dtype = state_dtype or dtype
    if state_dtype == dtype:
        return max(1, int(0.5 * math.log(1 / torch.finfo(dtype).eps) / (2 * math.log(growth))))
    ratio = torch.finfo(dtype).eps / torch.finfo(state_dtype).eps
    budget = MOVED_ENTRIES * ratio * (growth - 1) / (2 * growth * max(1, elements))
    return max(1, int(math.log(max(1.0, budget)) / math.log(growth)))


class Reversible(Backward):
    """Exact gradients of a reversible forward iteration, with memory flat in its length.

    The forward is the coupled iteration of McCallum, Arora & Foster (2025) with relaxation `b`
    (see the module docstring), stopped per sample at the forward's tolerance, within its
    evaluation cap (`max_iter` evaluations: one for f(z_0), then two per step). The backward
    rebuilds the states step by step and backpropagates through each step.

    b trades speed for exactness: the forward contracts at best by |1 - b| per step, and the
    rebuild amplifies rounding by at least 1 / |1 - b| per step. States are kept every
    `checkpoint_every` steps, which bounds the amplification: memory is two states per kept
    step, so it is flat in the number of steps only with `checkpoint_every=None`.

    With `precision="float64"` (the default) the states of a cell computing in float32, bfloat16
    or float16 are kept in float64 and f sees them rounded to its dtype, so the rebuild
    evaluates f at the forward's points exactly (see the module docstring); the output and the
    gradients are in the cell's dtype. `"native"` keeps the states in the cell's dtype.

    Args:
        b: the relaxation, in (0, 2), not 1. The default 0.5 loses the fewest digits per decade
            of residual among the values measured (0.5, 0.8, 1.2, 1.5); b > 1 can be faster
            but diverges on some cells.
        checkpoint_every: steps between kept states: "auto" (from b and the dtypes, see
            `auto_interval`), an integer, or None (keep only the first and last states).
        precision: "float64" (states in double precision whatever the cell's dtype) or
            "native" (states in the cell's dtype: half the bytes per kept state, but a float32
            rebuild can lose every digit on a cell with a large Lipschitz constant).
    """

    name: ClassVar[str] = "reversible"
    owns_forward: ClassVar[bool] = True

    def __init__(
        self,
        b: float = 0.5,
        *,
        checkpoint_every: int | str | None = "auto",
        precision: str = "float64",
    ) -> None:
        self.b = check_relaxation(b)
        if checkpoint_every is not None and checkpoint_every != "auto":
            if isinstance(checkpoint_every, str):
                raise ValueError(
                    "Reversible checkpoint_every must be 'auto', None or an integer >= 1, got "
                    f"{checkpoint_every!r}"
                )
            check_positive_int("Reversible checkpoint_every", checkpoint_every)
        self.checkpoint_every = checkpoint_every
        self.precision = check_precision(precision)

    def state_dtype(self, dtype: torch.dtype) -> torch.dtype:
        """The dtype the iteration keeps its states in, for a cell computing in `dtype`."""
        return wide_dtype(dtype) if self.precision == "float64" else dtype

    def interval(self, dtype: torch.dtype, elements: int = 1) -> int | None:
        """Steps between kept states for a cell computing in `dtype` on states of `elements`
        entries ("auto": see `auto_interval`)."""
        if self.checkpoint_every == "auto":
            return auto_interval(self.b, dtype, self.state_dtype(dtype), elements)
        return self.checkpoint_every  # type: ignore[return-value]

    def attach(
        self, f: FlatMap, z_star: torch.Tensor, forward: SolveSettings, record: Recorder
    ) -> torch.Tensor:
        raise UnsupportedError(
            "the reversible backward runs its own forward iteration, so it cannot be attached "
            "to a fixed point found elsewhere; use it as eq.DEQ(cell, backward='reversible') "
            "or eq.solve(f, z0, backward='reversible')"
        )

    def solve(
        self,
        f: Callable[[State], State],
        z0: State,
        settings: SolveSettings,
        *,
        what: str = "f",
        through: FlatMap | None = None,
    ) -> tuple[Solution, State]:
        """Run the reversible iteration from `z0` with the forward's tolerance and cap.

        Returns the solution (z: the last state) and the output z_N, which carries the exact
        gradient of the iteration under grad mode. `through`, when given, is the same map on
        flat `(batch, features)` matrices; the backward rebuild evaluates it.
        """
        refuse_vmap()
        transform = functorch_transform()
        if transform is not None:
            raise UnsupportedError(
                f"the reversible backward cannot run inside torch.func.{transform}: its "
                "gradient is an autograd.Function that rebuilds states with "
                "torch.autograd.grad; use loss.backward() or torch.autograd.grad outside it"
            )
        layout = StateLayout.of(z0, "z0")
        check_finite(z0, "z0")
        start = layout.flatten(z0)
        dtype, state_dtype = start.dtype, self.state_dtype(start.dtype)
        grad = torch.is_grad_enabled()
        watch = _Watch()
        with torch.no_grad():
            forward = _iterate(
                self.b,
                _in_dtype(_checked_flat_map(f, layout, what, "the reversible forward"), dtype),
                start.detach().to(state_dtype),
                settings,
                watch,
                keep_every=self.interval(dtype, start.numel()) if grad else None,
                describe_nonfinite=lambda flat: (
                    f"the output of {what} holds " + layout.locate_nonfinite(flat)
                ),
            )
        solution = forward.solution(settings, layout, dtype)
        report_failure(solution, settings.on_failure, what)
        if not grad:
            return solution, solution.z
        rebuild = through or _checked_flat_map(f, layout, what, "the reversible backward")
        run = _Run(
            b=self.b,
            dtype=dtype,
            f=rebuild,
            steps=forward.steps,
            checkpoints=forward.checkpoints,
            replay=watch.replay(),
            autocast=_autocast_state(start.device),
            solution=solution,
            what=what,
            features=layout.features,
        )
        run.closed = list(watch.closed.values())
        if not (start.requires_grad or run.closed):  # nothing upstream needs a gradient
            return solution, solution.z
        out = _ReversibleGradient.apply(run, start, forward.y, forward.z, *run.closed)
        return solution, layout.unflatten(out)


BACKWARDS[Reversible.name] = Reversible


@dataclass
class _Forward:
    """What the forward iteration leaves: last states, step counts, kept states, residuals."""

    y: torch.Tensor
    z: torch.Tensor
    fz: torch.Tensor
    steps: torch.Tensor  # (batch,) steps each sample took
    checkpoints: dict[int, tuple[torch.Tensor, torch.Tensor]]
    nfe: int
    abs_trace: list[torch.Tensor]
    rel_trace: list[torch.Tensor]
    status: Status

    def solution(
        self, settings: SolveSettings, layout: StateLayout, dtype: torch.dtype
    ) -> Solution:
        """The solve's report, its tensors in the cell's `dtype`."""
        abs_res, rel_res = self.abs_trace[-1], self.rel_trace[-1]
        residual = rel_res if settings.stop_mode == "rel" else abs_res
        real = torch.empty((), dtype=dtype).real.dtype
        return Solution(
            z=layout.unflatten(self.z.to(dtype)),
            nfe=self.nfe,
            converged=residual <= settings.tol,
            abs_residual=abs_res.to(real),
            rel_residual=rel_res.to(real),
            abs_trace=torch.stack(self.abs_trace).to(real),
            rel_trace=torch.stack(self.rel_trace).to(real),
            status=self.status,
            tol=settings.tol,
            stop_mode=settings.stop_mode,
            solver=Reversible.name,
            fz=layout.unflatten(self.fz.to(dtype)),
        )


def _residuals(z: torch.Tensor, fz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    abs_res = (fz - z).norm(dim=1)
    return abs_res, abs_res / (fz.norm(dim=1) + torch.finfo(fz.dtype).tiny)


def _iterate(
    b: float,
    f: FlatMap,
    start: torch.Tensor,
    settings: SolveSettings,
    watch: _Watch,
    *,
    keep_every: int | None,
    describe_nonfinite: Callable[[torch.Tensor], str],
) -> _Forward:
    """The forward iteration, each sample frozen once it has converged or diverged."""
    y = z = start
    with watch:
        fz = f(z)
    abs_res, rel_res = _residuals(z, fz)
    abs_trace, rel_trace = [abs_res], [rel_res]
    bound = settings.divergence_ratio * abs_res
    steps = torch.zeros(start.shape[0], dtype=torch.long, device=start.device)
    best = rel_res if settings.stop_mode == "rel" else abs_res
    checkpoints: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    max_steps, nfe, stalled = (settings.max_iter - 1) // 2, 1, 0
    done = torch.zeros_like(abs_res, dtype=torch.bool)  # converged or diverged: frozen
    status = Status.MAX_ITER
    for step in range(max_steps + 1):
        res = rel_res if settings.stop_mode == "rel" else abs_res
        nonfinite = ~(abs_res < math.inf)  # residuals are norms: False for NaN and inf
        bad_output = nonfinite & ~done & torch.isfinite(z).all(dim=1)
        done = done | (res <= settings.tol) | nonfinite | (abs_res > bound)
        improved = ~done & (res < best * (1 - PROGRESS_FRACTION))
        best = torch.minimum(best, res)
        flags = torch.stack(
            [bad_output.any(), (res <= settings.tol).all(), (~done).any(), improved.any()]
        ).tolist()  # one synchronization per step
        any_bad_output, all_converged, any_active, progressed = flags
        if any_bad_output:
            raise NonFiniteError(
                f"{describe_nonfinite(fz)} at evaluation {nfe} of the reversible forward, "
                "although the point it was evaluated at is finite"
            )
        stalled = 0 if progressed or step == 0 else stalled + 2
        if all_converged:
            status = Status.CONVERGED
            break
        if not any_active:
            status = Status.DIVERGED
            break
        if step == max_steps:
            break
        if settings.patience is not None and stalled >= settings.patience:
            status = Status.STAGNATED
            break
        if keep_every is not None and step > 0 and step % keep_every == 0:
            checkpoints[step] = (y, z)
        with autocast_off(start.device):
            y_next = (1 - b) * y + b * fz
        fy = f(y_next)
        with autocast_off(start.device):
            z_next = (1 - b) * z + b * fy
            mask = ~done.unsqueeze(1)
            y, z = torch.where(mask, y_next, y), torch.where(mask, z_next, z)
        steps += ~done
        fz = f(z)
        nfe += 2
        abs_res, rel_res = _residuals(z, fz)
        abs_trace.append(abs_res)
        rel_trace.append(rel_res)
    return _Forward(y, z, fz, steps, checkpoints, nfe, abs_trace, rel_trace, status)


def _in_dtype(f: FlatMap, dtype: torch.dtype) -> FlatMap:
    """f evaluated at its argument rounded to `dtype`, its output in the argument's dtype."""

    def rounded_f(state: torch.Tensor) -> torch.Tensor:
        return f(state.to(dtype)).to(state.dtype)

    return rounded_f


def _checked_flat_map(
    f: Callable[[State], State], layout: StateLayout, what: str, where: str
) -> FlatMap:
    """f on flat matrices, checking on every call that f returns the state's structure."""

    def flat_f(flat: torch.Tensor) -> torch.Tensor:
        out = f(layout.unflatten(flat))
        try:
            layout.check_same(out, f"the output of {what}")
        except StateMismatchError as error:
            raise StateMismatchError(f"{error} (in {where}; f must keep one structure)") from None
        return layout.flatten(out)

    return flat_f


class _Watch(TorchFunctionMode):
    """Watches one evaluation of f: the tensors it closes over that need gradients, and the
    variational dropout layers it applies (whose masks the rebuild must reuse)."""

    def __init__(self) -> None:
        super().__init__()
        self.closed: dict[int, torch.Tensor] = {}
        self.dropout: dict[int, VariationalDropout] = {}
        self._hook: Any = None

    def __enter__(self) -> _Watch:
        self._hook = nn.modules.module.register_module_forward_hook(self._module_called)
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        self._hook.remove()
        super().__exit__(*exc)

    def _module_called(self, module: nn.Module, args: Any, output: Any) -> None:
        if isinstance(module, VariationalDropout):
            self.dropout.setdefault(id(module), module)

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        for value in tree_flatten((args, kwargs))[0]:
            # under no_grad, a tensor that requires grad comes from outside f
            if isinstance(value, torch.Tensor) and value.requires_grad:
                self.closed.setdefault(id(value), value)
        return func(*args, **kwargs)

    def replay(self) -> Callable[[], Any]:
        """A context factory that makes later evaluations of f see the map the forward saw:
        the same dropout masks and the same cached normalized weights."""
        masks = [(layer, layer._mask) for layer in self.dropout.values()]
        cached = dict(parametrize._cache) if parametrize._cache_enabled else None

        @contextmanager
        def replaying() -> Iterator[None]:
            for layer, mask in masks:
                layer.hold()
                layer._mask = mask
            try:
                if cached is None:
                    yield
                else:
                    with parametrize.cached():
                        parametrize._cache.update(cached)
                        yield
            finally:
                for layer, _ in masks:
                    layer.release()

        return replaying


def _autocast_state(device: torch.device) -> Callable[[], Any]:
    """A context factory re-entering the autocast state the forward evaluated f under."""
    kind = device.type
    enabled, dtype = torch.is_autocast_enabled(kind), torch.get_autocast_dtype(kind)
    return lambda: torch.autocast(kind, dtype=dtype, enabled=enabled)


@dataclass
class _Run:
    """What the backward needs besides the saved tensors."""

    b: float
    dtype: torch.dtype  # the cell's: f is evaluated at the states rounded to it
    f: FlatMap
    steps: torch.Tensor
    checkpoints: dict[int, tuple[torch.Tensor, torch.Tensor]]
    replay: Callable[[], Any]
    autocast: Callable[[], Any]
    solution: Solution
    what: str
    features: int
    closed: list[torch.Tensor] = field(default_factory=list)  # the originals, with graphs
    checkpoint_steps: list[int] = field(default_factory=list)
    reconstruction_error: float = 0.0


class _ReversibleGradient(torch.autograd.Function):
    """Output z_N; its backward rebuilds the states and backpropagates through each step."""

    @staticmethod
    def forward(ctx, run, start, y_last, z_last, *closed):  # noqa: ANN001
        ctx.run = run
        kept = [t for pair in run.checkpoints.values() for t in pair]
        run.checkpoint_steps = list(run.checkpoints)
        run.checkpoints = {}  # held by autograd from here on
        ctx.save_for_backward(start, y_last, z_last, *kept)
        ctx.closed = len(closed)
        if z_last.dtype != run.dtype:
            return z_last.to(run.dtype)
        return z_last.view_as(z_last)

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001
        if torch.is_grad_enabled():
            raise UnsupportedError(
                "create_graph=True cannot pass through the reversible backward: it rebuilds "
                "its states outside autograd; use backward=eq.Unrolled() for higher derivatives"
            )
        run: _Run = ctx.run
        start, y_last, z_last, *kept = ctx.saved_tensors
        pairs = zip(kept[::2], kept[1::2], strict=True)
        kept_states = dict(zip(run.checkpoint_steps, pairs, strict=True))
        state_start = start.detach().to(y_last.dtype)
        grad_start, grad_closed = _backpropagate(
            run, state_start, y_last, z_last, kept_states, grad
        )
        return (None, grad_start.to(start.dtype), None, None, *grad_closed)


def _relative_error(rebuilt: torch.Tensor, kept: torch.Tensor, scale: torch.Tensor) -> float:
    """The largest per-sample distance between a rebuilt and a kept state, relative to the
    larger of the kept state's norm and `scale` (the last state's: a start at 0 has no size)."""
    size = torch.maximum(kept.norm(dim=1), scale) + torch.finfo(kept.dtype).tiny
    return float(((rebuilt - kept).norm(dim=1) / size).max())


def _backpropagate(
    run: _Run,
    start: torch.Tensor,
    y: torch.Tensor,
    z: torch.Tensor,
    kept: dict[int, tuple[torch.Tensor, torch.Tensor]],
    grad: torch.Tensor,
) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
    """Walk the steps from the last: rebuild each earlier state, backpropagate through the step.

    Returns the gradient at the initial state (y_0 = z_0 both are it) and at each closed-over
    tensor.
    """
    b, device, closed = run.b, start.device, run.closed
    total = int(run.steps.max()) if run.steps.numel() else 0
    grad_z = grad.to(z.dtype)  # the adjoints accumulate in the states' dtype
    grad_y = torch.zeros_like(grad_z)
    grad_closed: list[torch.Tensor | None] = [None] * len(closed)
    nfe, worst = 0, 0.0
    y, z = y.detach(), z.detach()
    scale = torch.maximum(y.norm(dim=1), z.norm(dim=1))

    def evaluate(point: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # at the point rounded to the cell's dtype, as the forward evaluated it
        leaf = point.detach().to(run.dtype).requires_grad_()
        with torch.enable_grad(), run.autocast():
            out = run.f(leaf)
        if out.shape != point.shape:
            raise StateMismatchError(
                f"the output of {run.what} changed structure between the reversible forward "
                f"and its backward rebuild: {run.features} features per sample expected, got "
                f"shape {tuple(out.shape)}"
            )
        return leaf, out

    def pull(out: torch.Tensor, leaf: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        inputs = [leaf, *closed]
        grads = torch.autograd.grad(out, inputs, weight.to(out.dtype), allow_unused=True)
        for i, g in enumerate(grads[1:]):
            if g is not None:
                grad_closed[i] = g if grad_closed[i] is None else grad_closed[i] + g
        vjp = grads[0]
        return torch.zeros_like(leaf) if vjp is None else vjp

    with run.replay():
        for n in range(total - 1, -1, -1):
            active = (run.steps > n).unsqueeze(1)
            # z_{n+1} = (1 - b) z_n + b f(y_{n+1}): rebuild z_n, pull grad_z through f(y_{n+1})
            y_leaf, fy = evaluate(y)
            with autocast_off(device):
                z_prev = torch.where(active, (z - b * fy.detach().to(z.dtype)) / (1 - b), z)
                weight = torch.where(active, b * grad_z, 0.0)
            grad_y = grad_y + pull(fy, y_leaf, weight)
            # y_{n+1} = (1 - b) y_n + b f(z_n): rebuild y_n, pull grad_y through f(z_n)
            z_leaf, fz = evaluate(z_prev)
            with autocast_off(device):
                y_prev = torch.where(active, (y - b * fz.detach().to(y.dtype)) / (1 - b), y)
                weight = torch.where(active, b * grad_y, 0.0)
            vjp_z = pull(fz, z_leaf, weight)
            with autocast_off(device):
                grad_z = torch.where(active, (1 - b) * grad_z, grad_z) + vjp_z
                grad_y = torch.where(active, (1 - b) * grad_y, grad_y)
            y, z = y_prev, z_prev
            nfe += 2
            if n in kept or n == 0:
                y_kept, z_kept = kept[n] if n else (start, start)
                if not bool(torch.isfinite(y).all() and torch.isfinite(z).all()):
                    raise NonFiniteError(
                        f"the reversible backward's rebuilt state became non-finite by step {n} "
                        f"of {total} (b={b}): rounding grows by 1/|1-b| per undone step; keep "
                        "states more often (Reversible(checkpoint_every=...)) or use a b "
                        "farther from 1"
                    )
                worst = max(
                    worst,
                    _relative_error(y, y_kept, scale),
                    _relative_error(z, z_kept, scale),
                )
                y, z = y_kept, z_kept
    run.reconstruction_error = worst
    run.solution.reconstruction_error = worst
    run.solution.backward_nfe = nfe
    if worst > RECONSTRUCTION_WARNING:
        warn_at_caller(
            f"the reversible backward rebuilt its states with relative error {worst:.1e} "
            f"(b={b}, {total} steps, {start.dtype}); the gradient may be inaccurate: keep "
            "states more often (Reversible(checkpoint_every=...)) or use a b farther from 1",
            ReconstructionWarning,
        )
    return grad_y + grad_z, grad_closed
