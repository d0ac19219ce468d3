"""NeuralSolver: a learned initializer and learned Anderson-style updates, safeguarded."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import EquilibriaError, StateMismatchError, check_positive_int
from ..files import atomic_write_bytes
from ..solvers.anderson import Anderson
from ..solvers.base import EvaluationBudget, Solver, Step
from ..state import State, StateLayout
from .initializer import Initializer
from .mixing import History, MixingNetwork, anderson_weights

FORMAT = "equilibria.neural_solver/1"


@dataclass
class NeuralState:
    history: History
    steps: int = 0
    classical: Any = None  # the Anderson solver's state once the learned steps are used up


def primary_input(x: Any) -> torch.Tensor:
    """The tensor a DEQ input holds for the initializer: `x` itself or its first element."""
    if isinstance(x, (tuple, list)) and x and isinstance(x[0], torch.Tensor):
        return x[0]
    if isinstance(x, torch.Tensor):
        return x
    raise TypeError(
        "a neural solver predicts the initial state from a tensor input, or from the first "
        f"element of a tuple/list input; got {type(x).__name__}"
    )


class NeuralSolver(nn.Module, Solver):
    """A fixed-point solver whose initial guess and updates are small trained networks.

    Usable wherever a solver is accepted (`eq.DEQ(cell, solver=neural)`, `eq.solve`). Each step
    mixes the last `m` iterates with weights and damping predicted from the residual history.
    With `safeguard` on, a predicted step that would increase a sample's residual is replaced,
    for that sample, by the classical Anderson step when that one is better (costing one more
    evaluation on such steps), so a step never ends worse than both the current iterate and the
    classical step. After `learned_steps` steps the solve continues with the classical
    `eq.Anderson` solver (same history length) from the current iterate, so a long solve is
    never left to an update network that was only trained on short ones.

    Args:
        x_shape, state_shapes, structure: what the initializer maps (see `Initializer`).
        init_width: hidden channels of the initializer (0: a linear map of the pooled input).
        init_skip: whether the initializer's heads also read the input (False: a bottleneck
            through the hidden layer, for inputs with many features).
        m: history length.
        pooled, hidden: sizes of the mixing network.
        safeguard: fall back to the classical step as described above.
        learned_steps: steps that use the learned update (later ones are classical).
    """

    name: ClassVar[str] = "neural"

    def __init__(
        self,
        x_shape: tuple[int, ...],
        state_shapes: list[tuple[int, ...]],
        structure: str = "tensor",
        *,
        init_width: int = 8,
        init_skip: bool = True,
        m: int = 5,
        pooled: int = 8,
        hidden: int = 8,
        safeguard: bool = True,
        learned_steps: int = 12,
    ) -> None:
        nn.Module.__init__(self)
        self.config = dict(
            x_shape=tuple(x_shape),
            state_shapes=[tuple(s) for s in state_shapes],
            structure=structure,
            init_width=check_positive_int("NeuralSolver init_width", init_width, 0),
            init_skip=bool(init_skip),
            m=check_positive_int("NeuralSolver m", m, minimum=2),
            pooled=check_positive_int("NeuralSolver pooled", pooled),
            hidden=check_positive_int("NeuralSolver hidden", hidden),
            learned_steps=check_positive_int("NeuralSolver learned_steps", learned_steps, 0),
        )
        self.safeguard = safeguard
        self.initializer = Initializer(x_shape, state_shapes, structure, init_width, init_skip)
        self.mixer = MixingNetwork(m=m, pooled=pooled, hidden=hidden)

    @classmethod
    def for_model(cls, x: Any, z0: State, **options: Any) -> NeuralSolver:
        """A solver sized for a DEQ whose input looks like `x` and state like `z0`.

        `x` is the DEQ's input: a tensor, or a tuple/list whose first element is the tensor
        the initial guess is predicted from (as `(embeddings, memory)` for a DEQ-Transformer).
        """
        layout = StateLayout.of(z0, "z0")
        x = primary_input(x)
        return cls(tuple(x.shape[1:]), [tuple(s) for s in layout.shapes], layout.kind, **options)

    @property
    def m(self) -> int:
        return self.config["m"]

    @property
    def sequence_state(self) -> bool:
        """Whether the state is one (length, features) sequence (whose length may vary)."""
        shapes = self.config["state_shapes"]
        return len(shapes) == 1 and len(shapes[0]) == 2 and len(self.config["x_shape"]) == 2

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- the Solver protocol ------------------------------------------------------------------

    def initial_state(self, x: Any) -> State:
        """The learned initial guess z0 for the DEQ input `x` (see `for_model`)."""
        return self.initializer(primary_input(x))

    def init(self, z: torch.Tensor, fz: torch.Tensor, g: torch.Tensor) -> NeuralState:
        shapes = self.config["state_shapes"]
        if self.sequence_state:  # (length, features): any length
            fits, expected = z.shape[1] % shapes[0][-1] == 0, f"a multiple of {shapes[0][-1]}"
        else:
            size = sum(torch.Size(s).numel() for s in shapes)
            fits, expected = z.shape[1] == size, str(size)
        if not fits:
            raise StateMismatchError(
                f"this neural solver was trained for states of per-sample shapes {shapes} "
                f"({expected} values), got {z.shape[1]} values"
            )
        return NeuralState(history=History.empty(z, self.m))

    def propose(self, history: History) -> tuple[torch.Tensor, torch.Tensor]:
        """(next iterate, the learned correction to Anderson's weights) from the history."""
        alpha, beta, correction = self.mixer(history)
        return history.mix(alpha, beta), correction

    def step(
        self,
        f: EvaluationBudget,
        z: torch.Tensor,
        fz: torch.Tensor,
        g: torch.Tensor,
        state: NeuralState,
    ) -> Step:
        if state.steps >= self.config["learned_steps"]:
            fallback = Anderson(m=self.m)
            classical = state.classical or fallback.init(z, fz, g)
            step = fallback.step(f, z, fz, g, classical)
            return Step(z=step.z, fz=step.fz, state=replace(state, classical=step.state))
        history = state.history.push(z, g)
        state = NeuralState(history, state.steps + 1)
        z_next, _ = self.propose(history)
        if not self.safeguard or f.remaining < 2:
            return Step(z=z_next, fz=None, state=state)
        fz_next = f(z_next)
        residual = (fz_next - z_next).norm(dim=1)
        worse = residual > g.norm(dim=1)
        if not bool(worse.any()):
            return Step(z=z_next, fz=fz_next, state=state)
        classical = history.mix(anderson_weights(history), torch.ones_like(residual[:, None]))
        f_classical = f(classical)
        use = (worse & ((f_classical - classical).norm(dim=1) < residual)).unsqueeze(1)
        return Step(
            z=torch.where(use, classical, z_next),
            fz=torch.where(use, f_classical, fz_next),
            state=state,
        )

    # -- saving and loading -------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write the solver atomically (temporary file, then rename)."""
        payload = {
            "format": FORMAT,
            "config": self.config,
            "safeguard": self.safeguard,
            "state_dict": self.state_dict(),
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        atomic_write_bytes(Path(path), buffer.getvalue())

    @classmethod
    def load(
        cls, path: str | os.PathLike, map_location: str | torch.device = "cpu"
    ) -> NeuralSolver:
        """Read a solver written by `save`, with a clear error for anything else."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no neural solver file at {path}")
        try:
            payload = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as error:  # corrupt or foreign file
            raise EquilibriaError(f"{path} is not a readable neural solver file: {error}") from None
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise EquilibriaError(f"{path} is not a neural solver file (format {FORMAT} expected)")
        config = dict(payload["config"])
        config.setdefault("init_width", 0)  # files from before the initializer's hidden layer
        config.setdefault("init_skip", True)  # files from before the bottleneck option
        solver = cls(
            config.pop("x_shape"),
            config.pop("state_shapes"),
            config.pop("structure"),
            safeguard=payload["safeguard"],
            **config,
        )
        try:
            solver.load_state_dict(payload["state_dict"])
        except RuntimeError as error:  # weights that do not fit the stored configuration
            raise EquilibriaError(
                f"{path} holds weights that do not match its own solver configuration "
                f"(written by an incompatible version?): {str(error).splitlines()[0]}"
            ) from None
        return solver
