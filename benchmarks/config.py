"""Settings shared by every benchmark part: device, size preset, threads and output folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from equilibria.errors import check_choice, check_positive_int

from .timing import CLOCKS, Clock

DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class BenchConfig:
    """What every part is told.

    Attributes:
        device: "cpu" or "cuda".
        quick: a smaller preset (fewer sizes and repeats) for a fast look.
        threads: intra-op threads on CPU; both libraries always run in the same process with the
            same setting.
        out: folder for the report and its plots.
        seed: seed of every random weight, input and upstream gradient.
        wall_clock: time with wall-clock time even where thread CPU time is used by default
            (CPU with one thread).
        cases: run only these named cases of a part that has them (the parity part's cells);
            empty: all of them.
        seeds: how many seeds (from `seed` on) a part that trains over several seeds uses;
            None: the part's own number.
    """

    device: str = "cpu"
    quick: bool = False
    threads: int = 1
    out: Path = Path("results/bench")
    seed: int = 0
    wall_clock: bool = False
    cases: tuple[str, ...] = ()
    seeds: int | None = None

    def __post_init__(self) -> None:
        check_choice("device", self.device, DEVICES)
        check_positive_int("threads", self.threads)
        if self.seeds is not None:
            check_positive_int("seeds", self.seeds)
        object.__setattr__(self, "cases", tuple(self.cases))
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError(
                f"device='cuda' was asked for but torch {torch.__version__} sees no CUDA device; "
                "use device='cpu'"
            )
        object.__setattr__(self, "out", Path(self.out))

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    @property
    def clock_name(self) -> str:
        """ "cpu" (the thread's CPU time) on CPU with one thread, else "wall"."""
        single_thread_cpu = self.device == "cpu" and self.threads == 1
        return "cpu" if single_thread_cpu and not self.wall_clock else "wall"

    @property
    def clock(self) -> Clock:
        return CLOCKS[self.clock_name]

    def timing(self) -> dict[str, object]:
        """Keyword arguments of `timing.interleaved` for this configuration."""
        return {"device": self.torch_device, "clock": self.clock}

    def pick(self, quick: object, full: object) -> object:
        """`quick` under the quick preset, else `full`."""
        return quick if self.quick else full

    def pick_cases(self, names: list[str]) -> list[str]:
        """The names among `names` that `cases` asks for (all when it is empty); a ValueError
        for a name the part does not have."""
        unknown = sorted(set(self.cases) - set(names))
        if unknown:
            raise ValueError(
                f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(names)}"
            )
        return [name for name in names if not self.cases or name in self.cases]

    def seed_list(self, default: int) -> list[int]:
        """`seeds` (or `default`) consecutive seeds from `seed` on."""
        return [self.seed + i for i in range(self.seeds or default)]
