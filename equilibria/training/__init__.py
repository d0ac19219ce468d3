"""Training image classifiers: the loop, checkpoints, distributed runs, analysis and plots."""

from .analysis import elastic_sweep, residual_traces
from .checkpoint import (
    CheckpointError,
    Progress,
    find_checkpoint,
    load_checkpoint,
    restore_model,
    save_checkpoint,
)
from .distributed import Runtime
from .engine import evaluate, train_step
from .metrics import Meter
from .run import RunResult, train
from .trainer import Trainer

__all__ = [
    "CheckpointError",
    "Meter",
    "Progress",
    "RunResult",
    "Runtime",
    "Trainer",
    "elastic_sweep",
    "evaluate",
    "find_checkpoint",
    "load_checkpoint",
    "residual_traces",
    "restore_model",
    "save_checkpoint",
    "train",
    "train_step",
]
