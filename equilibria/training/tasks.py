"""Which module trains each task (`run.task`): every one offers the same `train` function.

A task module's `train(config, out, runtime, *, checkpoint=None, on_step=None, log=print)`
returns a `RunResult` whose `headline` is the one line the command line prints at the end.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from ..config import ConfigError

# one line per task: run.task -> the module whose `train` runs it
TASK_MODULES: dict[str, str] = {
    "classify": "equilibria.training.run",
    "lm": "equilibria.lm.run",
    "ssl": "equilibria.ssl.run",
}


def task_trainer(task: str) -> Callable:
    """The `train` function of `task`."""
    if task not in TASK_MODULES:
        raise ConfigError(f"run.task={task!r} is not valid; tasks are {', '.join(TASK_MODULES)}")
    return importlib.import_module(TASK_MODULES[task]).train
