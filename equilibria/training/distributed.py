"""Where training runs: the device, and the process group when launched by torchrun."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..config import ConfigError


@dataclass(frozen=True)
class Runtime:
    """This process's place in the run: rank, number of processes and device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum of `values` over every process (unchanged in a single process)."""
        if self.distributed:
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def any(self, flag: bool) -> bool:
        """Whether `flag` is true in any process."""
        if not self.distributed:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=self.device)
        return bool(self.all_reduce_sum(value).item() > 0)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def resolve_device(setting: str, local_rank: int = 0) -> torch.device:
    """The torch device for run.device ("auto", "cpu", "cuda" or "cuda:N")."""
    if setting == "cpu":
        return torch.device("cpu")
    if setting == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else "no visible GPU"
        raise ConfigError(
            f"run.device={setting!r} asks for a GPU, but torch {torch.__version__} has {build}; "
            "use device=cpu (or auto)"
        )
    device = torch.device(f"cuda:{local_rank}" if setting == "cuda" else setting)
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(
            f"run.device={setting!r}: only {torch.cuda.device_count()} CUDA device(s) exist"
        )
    return device


def start(device_setting: str) -> Runtime:
    """The runtime of this process; joins the process group when torchrun launched it."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_setting, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Runtime(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def stop(runtime: Runtime) -> None:
    """Leave the process group (when there is one)."""
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def session(device_setting: str) -> Iterator[Runtime]:
    """This process's runtime for the duration of a command.

    On a normal exit every process waits for the others before the group is destroyed: rank 0
    still writes plots and summaries after the last collective, and a process that tears its
    group down while a peer is still connected can abort (gloo). After an error the group is
    left at once, since the other processes may never reach the barrier.
    """
    runtime = start(device_setting)
    try:
        yield runtime
        runtime.barrier()
    finally:
        stop(runtime)
