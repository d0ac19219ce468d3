"""What every task's training shares: the epoch loop, checkpoints, distributed runs, optimizers,
progress bars, running metrics, batch sampling and the checked update step.

A task (`equilibria.tasks`) supplies its data, model and trainer; `tasks.run.run_task` runs it.
"""

from .checkpoint import (
    CheckpointError,
    Progress,
    find_checkpoint,
    load_checkpoint,
    restore_model,
    save_checkpoint,
    stored_config,
)
from .distributed import Runtime
from .loop import EpochLoop, Outcome, TrainState
from .metrics import Meter

__all__ = [
    "CheckpointError",
    "EpochLoop",
    "Meter",
    "Outcome",
    "Progress",
    "Runtime",
    "TrainState",
    "find_checkpoint",
    "load_checkpoint",
    "restore_model",
    "save_checkpoint",
    "stored_config",
]
